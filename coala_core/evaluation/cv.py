"""K-fold cross-validation split by group: every pair of the data set is held out exactly once.

A single 221-pair test split gives intervals of about +-6 points; scoring every one of the n pairs out of
fold narrows them by about sqrt(n / 221) and lets two methods be compared pair by pair (McNemar, paired
bootstrap; :mod:`coala_core.evaluation.stats`).

* :func:`group_folds`: fold index of every pair; whole groups (conversations) go to one fold, folds balanced
  in pairs (largest groups first, each to the currently smallest fold; ties among groups broken by a seeded
  shuffle).
* :func:`inner_split`: inside a training fold, the validation groups that selection (Phase I beta path,
  Phase II grid, a baseline's grid) uses; again whole groups.
* :func:`cross_validate_pairs`: the streamed form. The pairs are a pair source (a FeatureStore, several
  stores one after another (:class:`ConcatPairs`), or in-memory arrays); a fold is a row index set over it.
  Each method's ``fit(train, validation)`` gets the fold's rows as pair sources (``SubsetPairs`` views read
  chunk by chunk) and returns a scorer (``.score(features) -> rewards``); the held-out fold is scored chunk by
  chunk. The COALA head trains on the views directly (Phase I keeps its rows resident only within
  ``phase1.memory_budget_mb``). A method that must hold its rows (linear BT, the AdamW net) is wrapped by
  :func:`rows_fitter`: it loads the fold's rows only when they fit the memory budget, else a ``ConfigError``
  naming the budget.
* :func:`cross_validate`: the in-memory form on (n, d) arrays with ``fit(train_w, train_l, val_w, val_l)``
  fitters (the same folds and scores as :func:`cross_validate_pairs` on the same rows).
* :func:`summarise_cv`: accuracy (ties count 1/2) with a group-bootstrap interval over all pairs, TRL's
  reward names, the per-fold accuracies, every pair of methods compared, and degeneracy warnings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from coala_core.engine.backend import to_numpy
from coala_core.engine.sources import SubsetPairs, as_pair_source, iter_checked
from coala_core.errors import ConfigError, DataError, DimensionMismatchError
from coala_core.evaluation.degenerate import reward_warnings
from coala_core.evaluation.metrics import pair_summary
from coala_core.evaluation.stats import compare_methods, group_bootstrap_means, interval, pair_scores


class Scorer(Protocol):
    def score(self, features: np.ndarray) -> np.ndarray: ...


Fitter = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], Scorer]
#: ``fit(train, validation) -> scorer`` on pair sources (``n_rows``, ``dim``, ``iter_chunks()``)
SourceFitter = Callable[[Any, Any], Scorer]

#: bytes per pair and feature a row-holding baseline needs: the rows (chosen + rejected) as float32 and two
#: float64 working copies (its standardised rows and the standardiser's stacked rows)
HELD_BYTES_PER_VALUE = 2 * (4 + 8 + 8)


class ConcatPairs:
    """Several pair sources (one store per split) read one after another as one source: rows of the second
    follow those of the first. Only ``iter_chunks`` is offered; nothing is read until it is iterated."""

    def __init__(self, sources: Sequence[Any]) -> None:
        self.sources = list(sources)
        if not self.sources:
            raise DataError("pairs: no feature stores to concatenate")
        dims = sorted({int(s.dim) for s in self.sources})
        if len(dims) != 1:
            raise DimensionMismatchError(f"pairs: the stores have different feature widths {dims}")
        self.dim = dims[0]
        self.n_rows = sum(int(s.n_rows) for s in self.sources)

    def iter_chunks(self) -> Iterator[tuple[int, int, Any, Any]]:
        offset = 0
        for s in self.sources:
            for start, stop, chosen, rejected in s.iter_chunks():
                yield offset + start, offset + stop, chosen, rejected
            offset += int(s.n_rows)


def load_rows(source: Any, memory_budget_mb: float, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a pair source as (chosen, rejected) arrays (n, d) of its dtype, read chunk by chunk, for a method
    that must hold its rows; ``ConfigError`` naming the budget when they (and the method's float64 working
    copies, :data:`HELD_BYTES_PER_VALUE` bytes per pair and feature) exceed ``memory_budget_mb``."""
    n, d = int(source.n_rows), int(source.dim)
    need = n * d * HELD_BYTES_PER_VALUE
    if need > memory_budget_mb * 2**20:
        raise ConfigError(
            f"{where}: holds its {n} pairs x {d} features in memory ({need / 2**20:.1f} MB with its working "
            f"copies), over the memory budget memory_budget_mb={memory_budget_mb:g}; raise phase1.memory_budget_mb "
            "or leave this method out (the COALA head streams its rows)")
    chosen: np.ndarray | None = None
    rejected: np.ndarray | None = None
    for start, stop, c, r in source.iter_chunks():
        c, r = to_numpy(c), to_numpy(r)
        if chosen is None or rejected is None:  # the source's own dtype (a store's float32, arrays as given)
            chosen, rejected = np.empty((n, d), dtype=c.dtype), np.empty((n, d), dtype=r.dtype)
        chosen[start:stop], rejected[start:stop] = c, r
    if chosen is None or rejected is None:
        return np.empty((0, d), np.float32), np.empty((0, d), np.float32)
    return chosen, rejected


def rows_fitter(fit: Fitter, memory_budget_mb: float = float("inf"), name: str = "method") -> SourceFitter:
    """A fitter on pair sources from one on arrays: the fold's train and validation rows are loaded under
    ``memory_budget_mb`` (:func:`load_rows`) and handed to ``fit(train_w, train_l, val_w, val_l)``."""

    def fit_sources(train: Any, validation: Any) -> Scorer:
        budget_mb = memory_budget_mb
        Fw, Fl = load_rows(train, budget_mb, f"{name} (train rows)")
        budget_mb -= Fw.shape[0] * Fw.shape[1] * HELD_BYTES_PER_VALUE / 2**20
        Vw, Vl = load_rows(validation, budget_mb, f"{name} (train + validation rows)")
        return fit(Fw, Fl, Vw, Vl)

    return fit_sources


def _group_index(groups: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(groups, dtype=str)
    if g.ndim != 1 or g.size == 0:
        raise DataError("groups: need one group label per pair (got none)")
    uniq, inverse = np.unique(g, return_inverse=True)
    return inverse, np.bincount(inverse, minlength=uniq.size)


def group_folds(groups: Sequence[Any] | np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold index (n,) in 0..k-1 of each pair; no group is split across folds; folds balanced in pairs."""
    inverse, sizes = _group_index(groups)
    if k < 2:
        raise ConfigError(f"cv: K must be at least 2, got {k}")
    if k > sizes.size:
        raise DataError(f"cv: K = {k} folds but only {sizes.size} groups; each fold needs a whole group")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(sizes.size)
    order = shuffled[np.argsort(-sizes[shuffled], kind="stable")]  # largest first, seeded among equal sizes
    fold_of_group = np.empty(sizes.size, dtype=np.int64)
    load = np.zeros(k, dtype=np.int64)
    for g in order:
        f = int(np.argmin(load))
        fold_of_group[g] = f
        load[f] += sizes[g]
    return fold_of_group[inverse]


def inner_split(groups: Sequence[Any] | np.ndarray, fraction: float = 0.15, seed: int = 0) -> np.ndarray:
    """Boolean mask (n,) of validation rows: seeded whole groups until ``fraction`` of the rows (at least one
    group, never all of them)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"cv: validation fraction must be in (0, 1), got {fraction}")
    inverse, sizes = _group_index(groups)
    if sizes.size < 2:
        raise DataError("cv: a training fold needs at least two groups (one for validation)")
    target = fraction * inverse.size
    chosen: list[Any] = []
    total = 0
    for g in np.random.default_rng(seed).permutation(sizes.size):
        if total >= target or len(chosen) == sizes.size - 1:
            break
        chosen.append(g)
        total += sizes[g]
    return np.isin(inverse, chosen)


@dataclass
class CVResult:
    """Out-of-fold rewards of every method on all n pairs, the fold of each pair, and per-fold records."""

    folds: np.ndarray
    groups: np.ndarray
    rewards: dict[str, tuple[np.ndarray, np.ndarray]]
    fold_records: list[dict[str, Any]] = field(default_factory=list)
    k: int = 0


def score_methods(scorers: Mapping[str, Scorer], source: Any, seconds: dict[str, float] | None = None,
                  where: str = "held-out pairs") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Rewards ``(r_w, r_l)`` (n,) of every pair of ``source`` under each scorer, in one chunked pass over the
    rows (checked finite); the scoring time of each scorer is added to ``seconds[name]``."""
    n, dim = int(source.n_rows), int(source.dim)
    for name, s in scorers.items():
        if int(getattr(s, "dim", dim)) != dim:
            raise DimensionMismatchError(f"{name}: reads features of width {getattr(s, 'dim', None)}, the features "
                                         f"have width {dim}")
    out = {name: (np.empty(n, np.float64), np.empty(n, np.float64)) for name in scorers}
    times = seconds if seconds is not None else {}
    for start, stop, chosen, rejected in iter_checked(source, where):
        for name, s in scorers.items():
            t0 = time.perf_counter()
            out[name][0][start:stop] = to_numpy(s.score(chosen))
            out[name][1][start:stop] = to_numpy(s.score(rejected))
            times[name] = times.get(name, 0.0) + time.perf_counter() - t0
    return out


def cross_validate_pairs(pairs: Any, groups: Sequence[Any] | np.ndarray, fitters: Mapping[str, SourceFitter], *,
                         k: int = 5, seed: int = 0, val_fraction: float = 0.15,
                         on_fold: Callable[[dict[str, Any]], None] | None = None) -> CVResult:
    """Fit every method on each training fold (selecting on its inner validation groups) and score the
    held-out fold, streamed: ``pairs`` is a pair source (a FeatureStore, :class:`ConcatPairs` of several, or a
    ``(chosen, rejected)`` tuple of arrays) of n pairs, ``groups`` (n,) their group labels; every fold is a
    row index set, handed to ``fit(train, validation)`` as ``SubsetPairs`` views; the held-out fold is scored
    by all methods in one chunked pass (:func:`score_methods`)."""
    source = as_pair_source(pairs)
    g = np.asarray(groups, dtype=str)
    n = int(source.n_rows)
    if g.ndim != 1 or g.shape[0] != n:
        raise DimensionMismatchError(f"groups: {g.shape[0] if g.ndim else 0} labels for {n} feature rows")
    if not fitters:
        raise ConfigError("cv: no methods to fit")
    folds = group_folds(g, k, seed)
    out = {name: (np.full(n, np.nan), np.full(n, np.nan)) for name in fitters}
    records = []
    for f in range(k):
        test = np.flatnonzero(folds == f)
        rest = np.flatnonzero(folds != f)
        is_val = inner_split(g[rest], val_fraction, seed + 1 + f)
        tr, va = rest[~is_val], rest[is_val]
        rec: dict[str, Any] = {"fold": f, "n_train": int(tr.size), "n_validation": int(va.size),
                               "n_test": int(test.size), "methods": {}}
        train_rows = SubsetPairs(source, tr, f"fold {f} train")
        val_rows = SubsetPairs(source, va, f"fold {f} validation")
        test_rows = SubsetPairs(source, test, f"fold {f} held-out")
        scorers, seconds = {}, {}
        for name, fit in fitters.items():
            t0 = time.perf_counter()
            scorers[name] = fit(train_rows, val_rows)
            seconds[name] = time.perf_counter() - t0
        scored = score_methods(scorers, test_rows, seconds, f"fold {f} held-out pairs")
        for name, scorer in scorers.items():
            r_w, r_l = scored[name]
            out[name][0][test], out[name][1][test] = r_w, r_l
            rec["methods"][name] = {"accuracy": float(np.mean(pair_scores(r_w, r_l))), "seconds": seconds[name],
                                    "beta": float(getattr(scorer, "beta", 1.0))}
        records.append(rec)
        if on_fold is not None:
            on_fold(rec)
    return CVResult(folds=folds, groups=g, rewards=out, fold_records=records, k=k)


def cross_validate(chosen: np.ndarray, rejected: np.ndarray, groups: Sequence[Any] | np.ndarray, fitters: Mapping[str, Fitter],
                   *, k: int = 5, seed: int = 0, val_fraction: float = 0.15,
                   on_fold: Callable[[dict[str, Any]], None] | None = None) -> CVResult:
    """:func:`cross_validate_pairs` on in-memory (n, d) ``chosen`` and ``rejected`` features with fitters
    ``fit(train_w, train_l, val_w, val_l) -> scorer`` on arrays; ``groups``: (n,) labels."""
    C, R = np.asarray(chosen), np.asarray(rejected)
    if C.shape != R.shape or C.ndim != 2:
        raise DimensionMismatchError(f"features: chosen {C.shape} and rejected {R.shape} must be (n, d)")
    wrapped = {name: rows_fitter(fit, name=name) for name, fit in fitters.items()}
    return cross_validate_pairs((C, R), groups, wrapped, k=k, seed=seed, val_fraction=val_fraction, on_fold=on_fold)


def summarise_cv(result: CVResult, *, n_boot: int = 1000, seed: int = 0, reference: str | None = None,
                 metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """JSON-able summary: per method accuracy [group-bootstrap 95% CI] over all pairs and TRL's reward names;
    every pair of methods compared (paired difference [CI], McNemar p); warnings for degenerate heads.

    ``reference``: a method to list first in the comparisons (the others are compared with it first).
    """
    names = list(result.rewards)
    if reference is not None and reference in names:
        names = [reference] + [m for m in names if m != reference]
    scores = np.stack([pair_scores(*result.rewards[m]) for m in names], axis=1)  # (n, methods)
    boot = group_bootstrap_means(scores, result.groups, n_boot=n_boot, seed=seed)
    methods: dict[str, Any] = {}
    warnings: list[str] = []
    for j, m in enumerate(names):
        r_w, r_l = result.rewards[m]
        betas = [rec["methods"][m]["beta"] for rec in result.fold_records]
        summary = pair_summary(r_w, r_l)
        lo, hi = interval(boot[:, j])
        methods[m] = {**summary, "accuracy": float(scores[:, j].mean()), "ci95": [lo, hi],
                      "fold_accuracy": [rec["methods"][m]["accuracy"] for rec in result.fold_records]}
        for rec in result.fold_records:
            rows = result.folds == rec["fold"]
            warnings += reward_warnings(r_w[rows], r_l[rows], rec["methods"][m]["beta"],
                                        name=f"{m} (fold {rec['fold']})")
        methods[m]["beta_per_fold"] = betas
    comparisons = compare_methods({m: result.rewards[m] for m in names}, result.groups, n_boot=n_boot, seed=seed)
    return {"k": result.k, "n_pairs": int(result.folds.size), "n_groups": int(np.unique(result.groups).size),
            "methods": methods, "comparisons": [c.to_dict() for c in comparisons], "folds": result.fold_records,
            "warnings": warnings, **({"metadata": dict(metadata)} if metadata else {})}
