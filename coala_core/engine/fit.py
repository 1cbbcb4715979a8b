"""``fit_head``: the one way a reward head is trained, by ``coala train`` and by the pipeline alike.

    fit_head(train, validation, spec) = fit_output_layer(fit_first_layer(train, validation, spec), train, validation, spec)

``train`` and ``validation`` are pair sources: a FeatureStore (or a :class:`SubsetPairs` of one), or a
``(chosen, rejected)`` tuple of (n, d) arrays. They are read chunk by chunk with prefetching: Phase I keeps
its standardised rows in (device) memory only when they fit ``spec.phase1.memory_budget_mb`` and otherwise
streams them on every pass; Phase II holds the hidden features (n, m) of the pairs, never the (n, d) rows.
Phase I runs on the GPU when cupy sees a CUDA device and ``phase1.backend`` is ``auto``
(:func:`coala_core.engine.backend.resolve_backend`); ``backend: numpy`` forces the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from coala_core.engine.backend import resolve_backend
from coala_core.engine.compute import admm_flops, phase2_flops
from coala_core.engine.record import TrainingRecord
from coala_core.engine.sources import as_pair_source, feature_moments, hidden_pairs
from coala_core.engine.spec import HeadSpec
from coala_core.errors import DataError
from coala_core.phase2.fit import Phase2Result, select_phase2
from coala_core.phase2.head import RewardHead, random_relu_head


@dataclass
class TrainedHead:
    """A head and its training record; ``phase1``/``phase2`` are the solver results when fit in this process."""

    head: RewardHead
    record: TrainingRecord
    phase1: Any = None  # coala_core.phase1.Phase1Result
    phase2: Phase2Result | None = None

    @classmethod
    def from_saved(cls, head: RewardHead) -> TrainedHead:
        """A head read back from disk (``storage.heads.load_head``), its record from its ``head.json``."""
        return cls(head=head, record=TrainingRecord.from_meta(head.meta))


def phase1_head(res: Any) -> RewardHead:
    """The network recovered by a Phase I solve (``coala_core.phase1.Phase1Result``) as a reward head.

    Theta1 (d', m), theta2 (m,), the gates (d', P) and the standardisation (mean, scale: (d,)) come from the
    solve; beta is 1 (Phase II sets its own). ``DataError`` when the solve kept no neuron (m = 0).
    """
    if res.n_active == 0:
        raise DataError(
            f"Phase I at the selected beta {res.beta:.3g} kept no neurons; widen the beta path "
            "(phase1.path_min_ratio) or give train.phase1_betas"
        )
    return RewardHead(
        theta1=np.asarray(res.theta1, np.float64), theta2=np.asarray(res.theta2, np.float64),
        mean=np.asarray(res.mean, np.float64), scale=np.asarray(res.scale, np.float64),
        gates=np.asarray(res.gates, np.float64), beta=1.0, program=res.program, bias=bool(res.bias),
        pattern=np.asarray(res.neuron_pattern, np.int64), v=np.asarray(res.v, np.float64),
        w=np.asarray(res.w, np.float64),
    )


def _sources(train: Any, validation: Any, chunk_rows: int) -> tuple[Any, Any]:
    tr, va = as_pair_source(train, chunk_rows), as_pair_source(validation, chunk_rows)
    for name, src in (("train", tr), ("validation", va)):
        if int(src.n_rows) == 0:
            raise DataError(f"{name}: no pairs; training selects on a validation split made by group")
    if int(tr.dim) != int(va.dim):
        raise DataError(f"validation: features of width {va.dim}, the training features have width {tr.dim}")
    return tr, va


def fit_first_layer(train: Any, validation: Any, spec: HeadSpec | None = None, *,
                    progress: Callable[[dict[str, Any]], None] | None = None, train_rows: Any = None) -> TrainedHead:
    """The first layer: the Phase I beta path on ``train`` selected on ``validation`` (``train.first_layer:
    phase1``), or a seeded random ReLU layer (``random``). ``progress(event)`` gets every ADMM iteration.
    ``train_rows``: the Phase I row source of the same train pairs that runs its passes elsewhere
    (``coala_core.phase1.dask_source.DaskStoreRows``: on a Dask cluster), in place of reading ``train`` here."""
    from coala_core.phase1 import fit_phase1_path

    spec = spec or HeadSpec()
    tr, va = _sources(train, validation, spec.phase1.chunk_rows)
    if spec.train.first_layer == "random":
        mean, scale = feature_moments(tr, "train")
        head = random_relu_head(int(tr.dim), spec.train.random_width, seed=spec.train.seed, mean=mean, scale=scale)
        return TrainedHead(head, TrainingRecord(spec=spec, first_layer="random"))
    config = resolve_backend(spec.phase1)
    rows = tr
    if train_rows is not None:
        if int(train_rows.n_rows) != 2 * int(tr.n_rows) or int(train_rows.dim) != int(tr.dim):
            raise DataError(f"train rows: {train_rows!r} holds {train_rows.n_rows} rows of width {train_rows.dim}, "
                            f"the train pairs {tr.n_rows} pairs of width {tr.dim}")
        rows, config = train_rows, config.replace(backend="numpy")  # the driver side of remote rows is numpy
    res = fit_phase1_path(rows, config=config, validation=va, betas=spec.train.phase1_betas, progress=progress)
    head = phase1_head(res)
    path = list(res.path or [])
    iters = int(sum(r.get("iterations", 0) for r in path)) or int(res.iterations)
    d, P = head.theta1.shape[0], head.gates.shape[1]
    flops = admm_flops(2 * int(tr.n_rows), d, P, iters, factorised=d * P <= config.factor_max_dim)
    summary = {k: v for k, v in res.summary().items() if k not in ("path", "config")}
    summary["backend"] = config.backend
    if train_rows is not None:  # where the rows were: e.g. {"rows": "dask", "dask_workers": 2, "dask_tasks": 5}
        summary.update(train_rows.describe() if hasattr(train_rows, "describe") else {"rows": type(train_rows).__name__})
    record = TrainingRecord(spec=spec, first_layer="phase1", phase1_beta=float(res.beta), phase1_path=path,
                            phase1_summary=summary, phase1_history=dict(res.history),
                            compute={"phase1_flops": flops, "phase1_iterations": float(iters)})
    return TrainedHead(head, record, phase1=res)


def fit_output_layer(first: TrainedHead, train: Any, validation: Any, spec: HeadSpec | None = None) -> TrainedHead:
    """Phase II: refit theta2 of ``first.head`` on the ``train`` pairs with (beta, gamma, l2) chosen on the
    ``validation`` pairs (``spec.phase2``; default: the Phase II section of ``first``'s record). With
    ``phase2.linear_term`` the head gains the linear term first (its d weights start at zero)."""
    spec = spec or first.record.spec
    tr, va = _sources(train, validation, spec.phase1.chunk_rows)
    base = first.head.with_linear_term() if spec.phase2.linear_term else first.head
    Hw, Hl = hidden_pairs(base, tr, "train")
    Hvw, Hvl = hidden_pairs(base, va, "validation")
    p2 = select_phase2(Hw, Hl, Hvw, Hvl, spec.phase2, theta_init=base.theta2)
    head = replace(base.with_theta2(p2.theta2, p2.config.beta), meta={})
    n_fits = max(len(p2.selection), 1) + 1
    flops = phase2_flops(int(tr.n_rows), head.dim, head.n_hidden, p2.iterations) * n_fits
    record = first.record.with_phase2(spec.replace(phase2=p2.config), p2.summary(), p2.selection, p2.history,
                                      {"phase2_flops": flops})
    return TrainedHead(head, record, phase1=first.phase1, phase2=p2)


def fit_head(train: Any, validation: Any, spec: HeadSpec | None = None, *,
             progress: Callable[[dict[str, Any]], None] | None = None) -> TrainedHead:
    """Train a reward head: :func:`fit_first_layer` then :func:`fit_output_layer` on the same sources.

    Returns the head (``head.meta`` empty) and its :class:`TrainingRecord`; write both with
    ``storage.heads.save_head(path, trained.head, provenance=..., **trained.record.head_json())``.
    """
    spec = spec or HeadSpec()
    return fit_output_layer(fit_first_layer(train, validation, spec, progress=progress), train, validation, spec)
