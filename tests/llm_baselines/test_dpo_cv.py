"""``benchmarks/dpo_cv.py``: its folds are the sweep's (``group_folds`` over the pairs' groups, refused when a
sweep's recorded folds differ), and a finished fold recorded under ``--record`` survives a wiped work directory:
it is skipped, not retrained, and ``--merge`` reads its rewards from the record."""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from coala_core.errors import DataError
from coala_core.evaluation.cv import group_folds

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dpo_cv():  # noqa: ANN201 - the benchmark script as a module
    spec = importlib.util.spec_from_file_location("dpo_cv", REPO / "benchmarks" / "dpo_cv.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["dpo_cv"] = mod
    spec.loader.exec_module(mod)
    return mod


def _ids_groups(n: int = 60) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(3)
    return [f"p{i}" for i in range(n)], [f"g{int(g)}" for g in rng.integers(0, 17, n)]


def test_folds_are_group_folds_and_a_differing_sweep_is_refused(dpo_cv, tmp_path: Path) -> None:  # noqa: ANN001
    ids, groups = _ids_groups()
    folds = dpo_cv.fold_of(ids, groups, 5, 0, None)
    assert [folds[i] for i in ids] == group_folds(groups, 5, 0).tolist()
    sweep = {"pair_ids": ids, "fold": [folds[i] for i in ids], "folds": 5}
    (tmp_path / "s.json.gz").write_bytes(gzip.compress(json.dumps(sweep).encode()))  # as benchmarks/results keeps one
    assert dpo_cv.read_json(tmp_path / "s.json.gz") == sweep
    assert dpo_cv.fold_of(ids, groups, 5, 0, sweep) == folds
    moved = dict(sweep, fold=[(f + 1) % 5 if i == 0 else f for i, f in enumerate(sweep["fold"])])
    with pytest.raises(DataError, match="differ from group_folds.*on 1 pairs"):
        dpo_cv.fold_of(ids, groups, 5, 0, moved)
    with pytest.raises(DataError, match="differ"):
        dpo_cv.fold_of(ids, groups, 4, 0, sweep)
    with pytest.raises(DataError, match="cover 59 pairs"):
        dpo_cv.fold_of(ids, groups, 5, 0, dict(sweep, pair_ids=ids[1:], fold=sweep["fold"][1:]))


def test_a_recorded_fold_survives_a_wiped_work_directory(dpo_cv, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out, rec = tmp_path / "work", tmp_path / "record"
    ids, groups = _ids_groups()
    folds = dpo_cv.fold_of(ids, groups, 5, 0, None)
    held = [i for i in ids if folds[i] == 2]
    fold_dir = out / "fold_2"
    fold_dir.mkdir(parents=True)
    rw = np.linspace(0.0, 1.0, len(held))
    pq.write_table(pa.table({"pair_id": held, "reward_chosen": rw, "reward_rejected": rw[::-1]}),
                   fold_dir / "scores.parquet")
    (fold_dir / "metrics.json").write_text(json.dumps({"stopped_early": False}))
    args = dpo_cv.argparse.Namespace(out=out, record=rec, fold_list=[2], pairs=tmp_path / "absent.parquet")

    assert dpo_cv.recorded(args, 2) is None
    dpo_cv.run_folds(args, folds)  # finished in the work directory: recorded, not retrained
    assert dpo_cv.recorded(args, 2) == rec / "fold_2.scores.parquet"
    assert json.loads((rec / "fold_2.metrics.json").read_text()) == {"stopped_early": False}
    assert not list(rec.glob("*.tmp"))

    for f in fold_dir.iterdir():  # the sandbox is wiped
        f.unlink()
    assert dpo_cv.fold_scores(args, 2) == rec / "fold_2.scores.parquet"
    dpo_cv.run_folds(args, folds)  # skipped from the record: no `coala baseline` is started (its pairs file is absent)
    assert "fold 2: finished earlier (recorded in" in capsys.readouterr().out
    assert dpo_cv.fold_scores(args, 3) is None  # an unfinished fold is neither in the work directory nor recorded
    got = pq.read_table(dpo_cv.fold_scores(args, 2)).to_pydict()
    assert got["pair_id"] == held and got["reward_chosen"] == rw.tolist()


def test_a_prior_summary_combines_to_the_all_pairs_counts(dpo_cv) -> None:  # noqa: ANN001
    """Folds known only by their counts (``--prior``) combine with folds merged pair by pair into exactly the
    all-pairs accuracy, difference, discordant counts and McNemar p, with an interval close to a group bootstrap
    over all pairs."""
    from coala_core.evaluation.stats import compare_pair, group_bootstrap_means, interval, mcnemar_exact

    rng = np.random.default_rng(5)
    n = 900
    groups = np.array([f"g{i // 3}" for i in range(n)])  # groups of three pairs, never split between the parts
    dpo = (rng.random(n) < 0.65).astype(float)
    head = np.where(rng.random(n) < 0.8, dpo, 1.0 - dpo)
    head[rng.random(n) < 0.05] = 1.0

    def part(idx: np.ndarray, folds: list[int]) -> dict:
        g = groups[idx]
        methods = {"dpo": {"correct": float(dpo[idx].sum()),
                           "ci95": list(interval(group_bootstrap_means(dpo[idx], g, n_boot=2000, seed=0)))}}
        c = compare_pair("head", head[idx], "dpo", dpo[idx], g, n_boot=2000, seed=0)
        methods["head"] = {"correct": float(head[idx].sum()), "only_this": c.only_a, "only_dpo": c.only_b,
                           "ci95": list(interval(group_bootstrap_means(head[idx], g, n_boot=2000, seed=0))),
                           "diff_ci95": [c.ci_lo, c.ci_hi]}
        return {"folds": folds, "n_pairs": int(idx.size), "methods": methods}

    first, rest = np.arange(0, 360), np.arange(360, n)
    out = dpo_cv.combine(part(first, [0, 1]), part(rest, [2]))
    rows = {r["method"]: r for r in out["table"]}
    assert out["n_pairs"] == n and out["folds"] == [0, 1, 2]
    assert rows["dpo"]["accuracy"] == round(dpo.mean(), 4) and rows["head"]["accuracy"] == round(head.mean(), 4)
    mc = mcnemar_exact(head, dpo)
    assert rows["head"]["only this / only DPO"] == f"{mc.b} / {mc.c}" and mc.b + mc.c > 100
    assert rows["head"]["McNemar p"] == f"{mc.p_value:.3g}"
    diff, lo_hi = rows["head"]["minus DPO [95% CI]"].split(" ", 1)
    assert float(diff) == pytest.approx(head.mean() - dpo.mean(), abs=1e-4)
    lo, hi = (float(x) for x in lo_hi.strip("[]").split(", "))
    whole = compare_pair("head", head, "dpo", dpo, groups, n_boot=2000, seed=0)
    assert lo < float(diff) < hi
    assert (hi - lo) == pytest.approx(whole.ci_hi - whole.ci_lo, rel=0.3)
