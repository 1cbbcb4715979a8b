"""Terminal progress bars for the long commands (tqdm on stderr), off when stderr is not a terminal or with
``--quiet``; ``COALA_PROGRESS=1`` forces them on (``0`` off), e.g. under a pager or in a test.

One helper for every command:

- :func:`extraction_progress` - a ``progress`` callback for :func:`coala_core.features.extract_features`
  (rows done, tokens/s) - ``coala features extract``;
- :func:`beta_path_progress` - a ``progress`` callback for the Phase I beta path (``fit_phase1_path`` /
  the engine's ``progress``): one bar over the path, showing the beta, its iteration and the residuals -
  ``coala train``;
- :func:`pipeline_progress` - while ``coala pipeline run`` runs its flow in this process, one bar per
  Prefect progress artifact the stages update (extraction, Phase I), through
  :data:`tasks.artifacts.PROGRESS_LISTENERS`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from tqdm.auto import tqdm


def enabled(quiet: bool = False, stream: TextIO | None = None) -> bool:
    """Bars are shown unless ``quiet``, ``COALA_PROGRESS=0`` or ``stream`` (stderr) is not a terminal."""
    if quiet:
        return False
    forced = os.environ.get("COALA_PROGRESS", "")
    if forced in ("0", "1"):
        return forced == "1"
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def _bar(total: float | None, desc: str, unit: str, quiet: bool, **kw: Any) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled(quiet), file=sys.stderr, dynamic_ncols=True,
                mininterval=0.2, **kw)


@contextmanager
def extraction_progress(total_rows: int | None = None, *, quiet: bool = False,
                        desc: str = "features") -> Iterator[Callable[[Any], None]]:
    """A callback taking extraction progress events (``rows_done``, ``rows_total``, ``stats.tokens``,
    ``stats.seconds``); the total is the events' ``rows_total`` unless given."""
    bar = _bar(total_rows, desc, "pair", quiet)
    try:
        def update(event: Any) -> None:
            if total_rows is None and getattr(event, "rows_total", None) and bar.total != event.rows_total:
                bar.total = int(event.rows_total)
            done = int(getattr(event, "rows_done", 0))
            stats = getattr(event, "stats", None)
            if stats is not None and getattr(stats, "seconds", 0):
                bar.set_postfix_str(f"{stats.tokens / max(stats.seconds, 1e-9):,.0f} tok/s", refresh=False)
            bar.update(max(done - bar.n, 0))

        yield update
    finally:
        bar.close()


@contextmanager
def beta_path_progress(*, quiet: bool = False, desc: str = "Phase I beta path") -> Iterator[Callable[[dict[str, Any]], None]]:
    """A callback taking Phase I iteration events (``beta_index``, ``n_betas``, ``beta``, ``iteration``,
    ``max_iter``, ``r_primal``, ``r_dual``; ``done: True`` once per beta); the bar counts betas, fractional
    within the current one."""
    bar = _bar(1.0, desc, "beta", quiet, bar_format="{l_bar}{bar}| {n:.2f}/{total:.0f} betas [{elapsed}<{remaining}{postfix}]")
    try:
        def update(event: dict[str, Any]) -> None:
            n_betas = max(int(event.get("n_betas", 1)), 1)
            if bar.total != n_betas:
                bar.total = n_betas
            index = int(event.get("beta_index", 0))
            if event.get("done"):
                position = float(index + 1)
                if "val_accuracy" in event:
                    bar.set_postfix_str(f"beta {event.get('beta', float('nan')):.3g} val acc {event['val_accuracy']:.3f}",
                                        refresh=False)
            else:
                within = min(float(event.get("iteration", 0)) / max(float(event.get("max_iter", 1)), 1.0), 1.0)
                position = index + within
                bar.set_postfix_str(f"beta {event.get('beta', float('nan')):.3g} it {event.get('iteration', 0)} "
                                    f"r_p {event.get('r_primal', float('nan')):.2e} "
                                    f"r_d {event.get('r_dual', float('nan')):.2e}", refresh=False)
            bar.update(max(position - bar.n, 0.0))

        yield update
    finally:
        bar.close()


@contextmanager
def pipeline_progress(*, quiet: bool = False) -> Iterator[None]:
    """While the block runs, every stage's progress artifact also drives a terminal bar (0-100 %)."""
    from tasks.artifacts import PROGRESS_LISTENERS

    if not enabled(quiet):
        yield
        return
    bars: dict[str, tqdm] = {}

    def listen(key: str, description: str, fraction: float) -> None:
        bar = bars.get(key)
        if bar is None:
            bar = bars[key] = _bar(100.0, description[:40], "%", False,
                                   bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}]")
        bar.update(max(100.0 * fraction - bar.n, 0.0))
        if fraction >= 1.0:
            bar.close()

    PROGRESS_LISTENERS.append(listen)
    try:
        yield
    finally:
        PROGRESS_LISTENERS.remove(listen)
        for bar in bars.values():
            bar.close()
