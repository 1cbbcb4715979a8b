"""DPO and ORPO full fine-tuning through TRL, with the compute each run spends counted exactly.

The trainer's data collator is wrapped so every batch it builds adds its real (attention-mask) tokens and
its padded tokens to a counter; the FLOPs follow from :mod:`coala_core.llm_baselines.compute`: policy
forward + backward (6NT) per token, plus the reference forward (2NT) for DPO. The reference model is an
explicit frozen copy of the starting policy (TRL would otherwise reload it by name, which a model loaded
from a GGUF file does not have).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from coala_core.errors import ConfigError, DataError
from coala_core.llm_baselines.compute import StageCompute, matmul_params, measure, train_step_flops
from coala_core.llm_baselines.config import PreferenceTuneConfig
from coala_core.llm_baselines.formatting import PairText, as_trl_columns

log = logging.getLogger("coala.llm_baselines")


class TokenCounter:
    """Wraps a collator; counts real tokens (attention-mask ones) and padded tokens of every batch."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator
        self.tokens = 0
        self.padded_tokens = 0
        self.batches = 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        masks = [v for k, v in batch.items() if k.endswith("attention_mask") and not k.startswith("prompt")]
        if not masks:
            raise DataError(f"collator output has no attention mask to count tokens (keys: {sorted(batch)})")
        self.tokens += int(sum(int(m.sum()) for m in masks))
        self.padded_tokens += int(sum(m.numel() for m in masks))
        self.batches += 1
        return batch


def _progress_callback(max_seconds: float | None) -> Any:
    """A TRL/transformers callback: logs every step's metrics and stops training after ``max_seconds``."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.perf_counter()
            self.stopped_early = False

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.start = time.perf_counter()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            keys = ("loss", "rewards/accuracies", "rewards/margins", "learning_rate")
            shown = ", ".join(f"{k}={logs[k]:.4g}" for k in keys if logs and isinstance(logs.get(k), int | float))
            log.info("step %d/%d (%.0f s): %s", state.global_step, state.max_steps, time.perf_counter() - self.start, shown)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if max_seconds is not None and time.perf_counter() - self.start >= max_seconds:
                self.stopped_early = state.global_step < state.max_steps
                control.should_training_stop = True

    return Progress()


@dataclass
class TuneResult:
    """The trained policy, its frozen reference (DPO) and the run's compute and TRL log history."""

    policy: Any
    reference: Any | None
    compute: StageCompute
    log_history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0


def _trl_args(config: PreferenceTuneConfig, output_dir: str, use_cpu: bool) -> Any:
    common: dict[str, Any] = dict(
        output_dir=output_dir, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.learning_rate,
        num_train_epochs=config.epochs, lr_scheduler_type=config.lr_scheduler,
        beta=config.beta, max_length=config.max_tokens, bf16=False, fp16=False, gradient_checkpointing=False,
        logging_steps=1, save_strategy="no", report_to=[], seed=config.seed, data_seed=config.seed,
        use_cpu=use_cpu, dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False,
    )
    if config.method == "dpo":
        from trl import DPOConfig

        return DPOConfig(**common)
    from trl.experimental.orpo import ORPOConfig

    return ORPOConfig(**common)


def tune(model: Any, tokenizer: Any, pairs: Sequence[PairText], config: PreferenceTuneConfig) -> TuneResult:
    """Fine-tune ``model`` in place on ``pairs`` with ``config.method``; returns policy, reference, compute.

    Objective (DPO): mean -log sigmoid(beta [(log pi - log pi_ref)(y_w|x) - (log pi - log pi_ref)(y_l|x)]).
    ORPO: mean NLL(y_w|x) - beta * log sigmoid(log odds(y_w|x) - log odds(y_l|x)), length-normalised.
    """
    if len(pairs) < config.batch_size:
        raise ConfigError(f"PreferenceTuneConfig.batch_size: {config.batch_size} is more than the {len(pairs)} training pairs")
    from datasets import Dataset

    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    use_cpu = next(model.parameters()).device.type == "cpu"
    model.requires_grad_(True)
    model.train()
    reference = None
    dataset = Dataset.from_dict(as_trl_columns(pairs))
    with tempfile.TemporaryDirectory(prefix="coala-trl-") as out:
        args = _trl_args(config, out, use_cpu)
        if config.method == "dpo":
            from trl import DPOTrainer

            reference = copy.deepcopy(model).eval().requires_grad_(False)
            trainer: Any = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=dataset, processing_class=tokenizer)
        else:
            from trl.experimental.orpo import ORPOTrainer

            trainer = ORPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
        counter = TokenCounter(trainer.data_collator)
        trainer.data_collator = counter
        progress = _progress_callback(config.max_seconds)
        trainer.add_callback(progress)
        n_params = matmul_params(model, lm_head=True)
        with measure(f"{config.method}_train") as stage:
            trainer.train()
        stage.tokens = counter.tokens
        stage.flops = train_step_flops(n_params, counter.tokens, reference=config.method == "dpo")
        stage.extra.update(padded_tokens=counter.padded_tokens, batches=counter.batches, n_params=n_params,
                           steps=int(trainer.state.global_step), max_steps=int(trainer.state.max_steps),
                           stopped_early=bool(progress.stopped_early))
        history = list(trainer.state.log_history)
        steps = int(trainer.state.global_step)
    model.eval()
    model.requires_grad_(False)
    return TuneResult(policy=model, reference=reference, compute=stage, log_history=history, steps=steps)
