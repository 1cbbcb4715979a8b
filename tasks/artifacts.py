"""Prefect artifacts: progress of long stages, tables and markdown for cards, diagnostics and reports.

Artifact keys must be lowercase letters, digits and dashes; :func:`artifact_key` makes one from any text.
Outside a flow or task run, Prefect refuses to create artifacts, so each helper is a no-op there (the
core functions still run from the CLI or a notebook without an engine).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import FlowRunContext, TaskRunContext


def in_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def artifact_key(text: str) -> str:
    key = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return key or "artifact"


PROGRESS_LISTENERS: list[Callable[[str, str, float], None]] = []
"""Called as ``listener(key, description, fraction)`` on every :meth:`Progress.update` (unthrottled), in
or outside a run: how ``coala pipeline run`` draws terminal bars (:mod:`coala_cli.progress`)."""


class Progress:
    """A progress artifact (0-100 %) updated at most every ``min_interval`` seconds."""

    def __init__(self, key: str, description: str, min_interval: float = 1.0) -> None:
        self.min_interval = min_interval
        self.key, self.description = artifact_key(key), description
        self._last = 0.0
        self.id = create_progress_artifact(0.0, key=self.key, description=description) if in_run() else None

    def update(self, fraction: float, *, force: bool = False) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        for listener in list(PROGRESS_LISTENERS):
            listener(self.key, self.description, fraction)
        now = time.monotonic()
        if self.id is None or (not force and now - self._last < self.min_interval):
            return
        self._last = now
        update_progress_artifact(self.id, progress=round(100.0 * fraction, 2))

    def done(self) -> None:
        self.update(1.0, force=True)


def table(key: str, rows: Sequence[Mapping[str, Any]], description: str) -> None:
    if in_run() and rows:
        create_table_artifact(key=artifact_key(key), table=[{k: _cell(v) for k, v in r.items()} for r in rows],
                              description=description)


def markdown(key: str, text: str, description: str, *, images_from: str | Path | None = None) -> None:
    """A markdown artifact; with ``images_from`` (the folder the markdown's relative image links point
    into) those images are inlined as data URIs, so the artifact shows its plots in the Prefect UI."""
    if not in_run():
        return
    if images_from is not None:
        from coala_core.report.embed import image_links, inline_images

        folder = Path(images_from)
        text = inline_images(text, {n: (folder / n).read_bytes() for n in image_links(text) if (folder / n).is_file()})
    create_markdown_artifact(key=artifact_key(key), markdown=text, description=description)


def link(key: str, url: str, text: str, description: str) -> None:
    if in_run():
        create_link_artifact(key=artifact_key(key), link=url, link_text=text, description=description)


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, str | int | bool) or v is None:
        return v
    return str(v)
