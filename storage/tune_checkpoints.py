"""Trainer checkpoints of one DPO/ORPO training, so an interrupted ``coala baseline --method dpo|orpo`` resumes.

Layout under ``root`` (``coala baseline`` uses ``<output>/checkpoints``)::

    identity.json                       which training these are (config fields, pair texts, model, versions)
    trainer/checkpoint-<step>/          the trainer's own folder: model.safetensors, optimizer/scheduler/RNG
                                        state, trainer_state.json ...
    trainer/checkpoint-<step>/coala_progress.json   written last, atomically: the folder is complete

The trainer writes its folder file by file, so a run cut while saving leaves a folder without
``coala_progress.json``; :meth:`TuneCheckpoints.latest` removes such folders and returns the newest complete
one. The trainer keeps the two newest (``save_total_limit``), so a cut save never leaves none.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from coala_core.errors import ConfigError, StoreError
from storage.atomic import atomic_write_text

PROGRESS = "coala_progress.json"


def _differences(held: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(held) | set(wanted)):
        a, b = held.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(key)
    return out


class TuneCheckpoints:
    """The checkpoints of one training under ``root`` (implements ``llm_baselines.train.CheckpointStore``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def directory(self) -> str:
        return str(self.root / "trainer")

    def claim(self, identity: dict[str, Any]) -> None:
        wanted = json.loads(json.dumps(identity))
        path = self.root / "identity.json"
        if path.is_file():
            try:
                held = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise StoreError(f"{path}: unreadable ({err}); remove {self.root} to train from the start") from None
            if held != wanted:
                raise ConfigError(f"{self.root}: checkpoints of another training (differs in "
                                  f"{', '.join(_differences(held, wanted))}); remove that folder or choose another "
                                  "--output to train from the start")
            return
        if Path(self.directory).exists() and any(Path(self.directory).iterdir()):
            raise StoreError(f"{self.directory}: checkpoints without {path.name}; remove {self.root} to train "
                             "from the start")
        atomic_write_text(path, json.dumps(wanted, indent=2, sort_keys=True))

    def latest(self) -> tuple[str, dict[str, Any]] | None:
        complete: list[tuple[int, Path]] = []
        for folder in Path(self.directory).glob("checkpoint-*"):
            step = folder.name.removeprefix("checkpoint-")
            if not folder.is_dir() or not step.isdigit():
                continue
            if (folder / PROGRESS).is_file():
                complete.append((int(step), folder))
            else:  # cut while the trainer was writing it
                shutil.rmtree(folder)
        if not complete:
            return None
        _, folder = max(complete)
        return str(folder), json.loads((folder / PROGRESS).read_text())

    def mark(self, step: int, progress: dict[str, Any]) -> None:
        folder = Path(self.directory) / f"checkpoint-{step}"
        if not folder.is_dir():
            raise StoreError(f"{folder}: the trainer did not write this checkpoint")
        atomic_write_text(folder / PROGRESS, json.dumps(progress, sort_keys=True))

    def remove(self) -> None:
        """Delete every checkpoint (the training's results are written elsewhere)."""
        shutil.rmtree(self.root, ignore_errors=True)
