"""DPO and ORPO full fine-tuning through TRL, with the compute each run spends counted exactly.

The trainer's data collator is wrapped so every batch it builds adds its real (attention-mask) tokens and
its padded tokens to a counter; the FLOPs follow from :mod:`coala_core.llm_baselines.compute`: policy
forward + backward (6NT) per token, plus the reference forward (2NT) for DPO. The reference model is an
explicit frozen copy of the starting policy (TRL would otherwise reload it by name, which a model loaded
from a GGUF file does not have).

Given a :class:`CheckpointStore`, a run saves the trainer's state every ``checkpoint_steps`` optimiser steps
(weights as safetensors; optimiser, scheduler and RNG state loaded back with ``weights_only=True``) and
resumes from the newest complete checkpoint of the same training (same config fields, pair texts, starting
model and library versions; another training's checkpoints are an error, never silently reused). The
reference stays the starting weights; tokens, FLOPs and seconds are the whole run's, across processes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import resource
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Protocol

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
        self.per_batch: list[tuple[int, int]] = []  # (real, padded) tokens of each batch, in order

    @property
    def tokens(self) -> int:
        return sum(t for t, _ in self.per_batch)

    @property
    def padded_tokens(self) -> int:
        return sum(p for _, p in self.per_batch)

    @property
    def batches(self) -> int:
        return len(self.per_batch)

    def through(self, n_batches: int) -> tuple[int, int]:
        """Real and padded tokens of the first ``n_batches`` batches (the data loader may fetch ahead)."""
        head = self.per_batch[:n_batches]
        return sum(t for t, _ in head), sum(p for _, p in head)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        masks = [v for k, v in batch.items() if k.endswith("attention_mask") and not k.startswith("prompt")]
        if not masks:
            raise DataError(f"collator output has no attention mask to count tokens (keys: {sorted(batch)})")
        self.per_batch.append((int(sum(int(m.sum()) for m in masks)), int(sum(m.numel() for m in masks))))
        return batch


class CheckpointStore(Protocol):
    """Where one training keeps its trainer checkpoints (``storage.tune_checkpoints.TuneCheckpoints``)."""

    @property
    def directory(self) -> str:
        """The trainer's output directory (``checkpoint-<step>`` folders go there)."""
        ...

    def claim(self, identity: dict[str, Any]) -> None:
        """Record ``identity`` for a new store; raise ``ConfigError`` if the store holds another training's."""
        ...

    def latest(self) -> tuple[str, dict[str, Any]] | None:
        """The newest complete checkpoint folder and the progress recorded with it, if any."""
        ...

    def mark(self, step: int, progress: dict[str, Any]) -> None:
        """``checkpoint-<step>`` is completely written; record the run's progress with it."""
        ...


def training_identity(config: PreferenceTuneConfig, pairs: Sequence[PairText], model_key: str) -> dict[str, Any]:
    """What decides the trained weights: config fields, a digest of the pair texts in order, the starting
    model, and the versions of the libraries that write and read the checkpoints."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([p.prompt, p.chosen, p.rejected], ensure_ascii=False).encode("utf-8"))
    return {"config": config.training_identity(), "pairs_sha256": h.hexdigest(), "n_pairs": len(pairs),
            "model": model_key, "versions": {lib: version(lib) for lib in ("trl", "transformers", "torch")}}


def _progress_callback(max_seconds: float | None, counter: TokenCounter, checkpoints: CheckpointStore | None,
                       prior: dict[str, Any], grad_accum: int) -> Any:
    """A TRL/transformers callback: logs every step's metrics, stops training after ``max_seconds`` (saving a
    checkpoint there and at the last step), and marks each saved checkpoint complete with the run's progress."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.perf_counter()
            self.stopped_early = False
            self.first_step = int(prior.get("step", 0))

        def progress(self, step: int) -> dict[str, Any]:
            tokens, padded = counter.through((step - self.first_step) * grad_accum)
            return {"step": step, "tokens": int(prior.get("tokens", 0)) + tokens,
                    "padded_tokens": int(prior.get("padded_tokens", 0)) + padded,
                    "seconds": float(prior.get("seconds", 0.0)) + time.perf_counter() - self.start,
                    "peak_rss_bytes": max(int(prior.get("peak_rss_bytes", 0)),
                                          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.start = time.perf_counter()

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if checkpoints is not None:
                checkpoints.mark(int(state.global_step), self.progress(int(state.global_step)))

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            keys = ("loss", "rewards/accuracies", "rewards/margins", "learning_rate")
            shown = ", ".join(f"{k}={logs[k]:.4g}" for k in keys if logs and isinstance(logs.get(k), int | float))
            log.info("step %d/%d (%.0f s): %s", state.global_step, state.max_steps, time.perf_counter() - self.start, shown)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if max_seconds is not None and time.perf_counter() - self.start >= max_seconds:
                self.stopped_early = state.global_step < state.max_steps
                control.should_training_stop = True
            if checkpoints is not None and (control.should_training_stop or state.global_step >= state.max_steps):
                control.should_save = True

    return Progress()


@dataclass
class TuneResult:
    """The trained policy, its frozen reference (DPO) and the run's compute and TRL log history."""

    policy: Any
    reference: Any | None
    compute: StageCompute
    log_history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0


def _trl_args(config: PreferenceTuneConfig, output_dir: str, use_cpu: bool, save: bool) -> Any:
    saving: dict[str, Any] = (dict(save_strategy="steps", save_steps=config.checkpoint_steps, save_total_limit=2)
                              if save else dict(save_strategy="no"))
    common: dict[str, Any] = dict(
        output_dir=output_dir, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.learning_rate,
        num_train_epochs=config.epochs, lr_scheduler_type=config.lr_scheduler,
        beta=config.beta, max_length=config.max_tokens, bf16=False, fp16=False, gradient_checkpointing=False,
        logging_steps=1, report_to=[], seed=config.seed, data_seed=config.seed, **saving,
        use_cpu=use_cpu, dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False,
    )
    if config.method == "dpo":
        from trl import DPOConfig

        return DPOConfig(**common)
    from trl.experimental.orpo import ORPOConfig

    return ORPOConfig(**common)


def tune(model: Any, tokenizer: Any, pairs: Sequence[PairText], config: PreferenceTuneConfig, *,
         checkpoints: CheckpointStore | None = None, model_key: str = "") -> TuneResult:
    """Fine-tune ``model`` in place on ``pairs`` with ``config.method``; returns policy, reference, compute.

    Objective (DPO): mean -log sigmoid(beta [(log pi - log pi_ref)(y_w|x) - (log pi - log pi_ref)(y_l|x)]).
    ORPO: mean NLL(y_w|x) - beta * log sigmoid(log odds(y_w|x) - log odds(y_l|x)), length-normalised.
    With ``checkpoints`` the run resumes from the newest complete checkpoint of the same training
    (``model_key`` names the starting weights in its identity) and saves new ones as it goes.
    """
    if len(pairs) < config.batch_size:
        raise ConfigError(f"PreferenceTuneConfig.batch_size: {config.batch_size} is more than the {len(pairs)} training pairs")
    from datasets import Dataset

    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    resume: tuple[str, dict[str, Any]] | None = None
    if checkpoints is not None:
        checkpoints.claim(training_identity(config, pairs, model_key))
        resume = checkpoints.latest()
    use_cpu = next(model.parameters()).device.type == "cpu"
    model.requires_grad_(True)
    model.train()
    reference = None
    dataset = Dataset.from_dict(as_trl_columns(pairs))
    with tempfile.TemporaryDirectory(prefix="coala-trl-") as scratch:
        args = _trl_args(config, checkpoints.directory if checkpoints else scratch, use_cpu, checkpoints is not None)
        if config.method == "dpo":
            from trl import DPOTrainer

            reference = copy.deepcopy(model).eval().requires_grad_(False)  # the starting weights, also on resume
            trainer: Any = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=dataset, processing_class=tokenizer)
        else:
            from trl.experimental.orpo import ORPOTrainer

            trainer = ORPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
        counter = TokenCounter(trainer.data_collator)
        trainer.data_collator = counter
        prior = resume[1] if resume else {}
        progress = _progress_callback(config.max_seconds, counter, checkpoints, prior, config.grad_accum)
        trainer.add_callback(progress)
        n_params = matmul_params(model, lm_head=True)
        if resume:
            log.info("resuming %s from %s (step %d)", config.method, resume[0], int(prior["step"]))
        with measure(f"{config.method}_train") as stage:
            trainer.train(resume_from_checkpoint=resume[0] if resume else None)
        steps = int(trainer.state.global_step)
        done = progress.progress(steps)
        stage.tokens = done["tokens"]
        stage.flops = train_step_flops(n_params, stage.tokens, reference=config.method == "dpo")
        this_process = stage.seconds
        stage.seconds += float(prior.get("seconds", 0.0))
        stage.peak_rss_bytes = max(stage.peak_rss_bytes, int(prior.get("peak_rss_bytes", 0)))
        stage.extra.update(padded_tokens=done["padded_tokens"], batches=steps * config.grad_accum, n_params=n_params,
                           steps=steps, max_steps=int(trainer.state.max_steps),
                           stopped_early=bool(progress.stopped_early), resumed_from_step=int(prior.get("step", 0)),
                           seconds_this_process=this_process)
        history = list(trainer.state.log_history)
    model.eval()
    model.requires_grad_(False)
    return TuneResult(policy=model, reference=reference, compute=stage, log_history=history, steps=steps)
