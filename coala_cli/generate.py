"""``coala generate``: replies from the head's backbone, plain, best-of-n reranked, or head-guided
(method.md section 7), one JSON line per prompt.

Settings: ``--config YAML`` reads its ``generate`` section (``configs/paper.yaml`` holds the paper's values,
which are also the defaults); flags override it.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import typer

from coala_cli._common import config_option, handle_errors
from coala_cli.score import BACKBONE, MODEL_URI, WORKDIR, tracking_uri
from coala_core.errors import ConfigError, DataError
from coala_core.generation.config import GenerateConfig


def read_prompts(prompt: list[str] | None, prompts: Path | None) -> tuple[list[Any], list[dict[str, Any]]]:
    """Prompts as given (text or message lists) and the extra fields of each row (``--prompts`` rows may carry
    ids); DataError ``file:line`` for a row without ``prompt``."""
    if bool(prompt) == (prompts is not None):
        raise ConfigError("give --prompt TEXT (repeatable) or --prompts FILE (JSONL/Parquet rows with a prompt field), not both")
    if prompt:
        return list(prompt), [{} for _ in prompt]
    from coala_core.data.sources import read_records

    records, _ = read_records(prompts)  # type: ignore[arg-type]
    if not records:
        raise DataError(f"{prompts}: no rows")
    for rec in records:
        if "prompt" not in rec.data:
            raise DataError(f"{rec.where}: missing field 'prompt' (text or a list of {{role, content}} messages)")
    return [r.data["prompt"] for r in records], [{k: v for k, v in r.data.items() if k != "prompt"} for r in records]


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


@handle_errors
def generate(
    model_uri: str = MODEL_URI,
    prompt: list[str] | None = typer.Option(None, "--prompt", help="a prompt text (repeat for several)", show_default="none: give --prompt or --prompts"),
    prompts: Path | None = typer.Option(None, "--prompts", help="JSONL or Parquet rows with prompt (text or messages)", show_default="none"),
    mode: str | None = config_option(GenerateConfig, "mode"),
    n: int | None = config_option(GenerateConfig, "n"),
    guidance_scale: float | None = config_option(GenerateConfig, "guidance_scale"),
    guidance_every: int | None = config_option(GenerateConfig, "guidance_every"),
    top_k: int | None = config_option(GenerateConfig, "guidance_top_k", "--top-k"),
    temperature: float | None = config_option(GenerateConfig, "temperature"),
    top_p: float | None = config_option(GenerateConfig, "top_p"),
    repetition_penalty: float | None = config_option(GenerateConfig, "repetition_penalty"),
    max_new_tokens: int | None = config_option(GenerateConfig, "max_new_tokens"),
    seed: int | None = config_option(GenerateConfig, "seed"),
    config: Path | None = typer.Option(None, "--config", help="YAML whose generate section sets the defaults", show_default="none: the paper's values"),
    output: Path | None = typer.Option(None, "--output", help="JSONL file", show_default="standard output"),
    backbone: str | None = BACKBONE,
    workdir: Path = WORKDIR,
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda", show_default="auto"),
) -> None:
    """Generate replies with the head's backbone: plain sampling, best-of-n reranking or head-guided decoding."""
    from coala_core.generation import TextGenerator, to_messages
    from tasks.model_uri import open_scorer

    flags = {"mode": mode, "n": n, "guidance_scale": guidance_scale, "guidance_every": guidance_every,
             "guidance_top_k": top_k, "temperature": temperature, "top_p": top_p, "repetition_penalty": repetition_penalty,
             "max_new_tokens": max_new_tokens, "seed": seed}
    cfg = GenerateConfig.from_yaml(config, "generate", **flags) if config else GenerateConfig.build(**flags)
    raw, extras = read_prompts(prompt, prompts)
    messages = [to_messages(p, f"prompt {i + 1}") for i, p in enumerate(raw)]
    scorer, _ = open_scorer(model_uri, backbone=backbone, tracking_uri=tracking_uri(workdir), device=device)
    results, stats = TextGenerator(scorer, cfg).generate(messages)
    lines = []
    for g, p, extra in zip(results, raw, extras, strict=True):
        row: dict[str, Any] = {**extra, "prompt": p, "mode": cfg.mode, "response": g.response, "reward": _finite(g.reward),
                               "tokens": g.tokens}
        if g.candidates:
            row["candidates"] = [{"text": c.text, "reward": _finite(c.reward), "tokens": c.tokens} for c in g.candidates]
        lines.append(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    if output is None:
        sys.stdout.write("".join(lines))
    else:
        from storage.atomic import atomic_write_text

        atomic_write_text(output, "".join(lines))
    typer.echo(f"{cfg.mode}: {len(results)} prompts, {stats.tokens} tokens in {stats.seconds:.1f} s "
               f"({stats.tokens_per_second:.1f} tokens/s)" + (f"; written to {output}" if output else ""), err=True)


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
