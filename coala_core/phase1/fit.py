"""Public entry points of Phase I: ``fit_phase1`` and ``fit_phase1_path``.

``fit_phase1(X, y, config=None, **overrides)`` fits the convex two-layer ReLU program (or its gated
relaxation) to rows X (n, d) labelled y in {+1, -1}; ``X`` may instead be a ``(chosen, rejected)`` tuple, a
FeatureStore-like object (``iter_chunks``/``n_rows``/``dim``; chosen rows +1, rejected -1) or a RowSource.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coala_core.phase1.config import Phase1Config
from coala_core.phase1.data import PreparedRows
from coala_core.phase1.result import Phase1Result
from coala_core.phase1.solver import Phase1Solver
from coala_core.phase1.source import RowSource, as_row_source


def make_config(config: Phase1Config | Mapping[str, Any] | None, overrides: dict[str, Any]) -> Phase1Config:
    """A validated Phase1Config from a config object or mapping, updated by overrides (by field name)."""
    if isinstance(config, Phase1Config):
        return config.replace(**overrides) if overrides else config
    return Phase1Config.build(dict(config or {}), **overrides)


def prepare(X: Any, y: Any, config: Phase1Config, validation: Any = None, validation_y: Any = None,
            progress: Any = None) -> Phase1Solver:
    """Prepare rows (standardisation, patterns, residency), validation rows and the solver."""
    source: RowSource = as_row_source(X, y, config.chunk_rows)
    rows = PreparedRows(source, config)
    val_rows = None
    if validation is not None:
        vsrc = as_row_source(validation, validation_y, config.chunk_rows)
        val_rows = PreparedRows(vsrc, config, gates=rows.gates, standardizer=rows.standardizer)
    return Phase1Solver(rows, config, val_rows, progress=progress)


def fit_phase1(X: Any, y: Any = None, config: Phase1Config | Mapping[str, Any] | None = None, *,
               validation: Any = None, validation_y: Any = None, progress: Any = None,
               **overrides: Any) -> Phase1Result:
    """Fit Phase I at ``config.beta``.

    Objective (``loss="mean"``): (1/(2n)) ||sum_i D_i X (v_i - w_i) - y||^2 + beta sum_i (||v_i|| + ||w_i||)
    subject to the cone constraints (``program="relu"``). Returns a :class:`Phase1Result` with ``v``, ``w``
    (P, d'), ``gates`` (d', P), ``theta1`` (d', m), ``theta2`` (m,), ``history`` and ``converged``;
    ``validation`` (same kinds as X) adds held-out accuracy to the history; ``progress(event: dict)`` is
    called after every iteration.
    """
    cfg = make_config(config, overrides)
    solver = prepare(X, y, cfg, validation, validation_y, progress)
    result, _ = solver.solve()
    result.seconds += solver.setup_seconds
    return result
