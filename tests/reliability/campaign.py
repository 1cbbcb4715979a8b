"""The kill -9 campaign as code: every CLI stage killed at random points, then rerun to the reference result.

For each stage (data build, features extract, train, evaluate) a reference run in its own folder gives the
expected output and a wall time T. In the faulted folder the stage is started ``kills`` times and killed with
SIGKILL after a uniform random delay in [0.1 T, 1.1 T] (a run that ends first counts as not faulted; every
other extraction kill instead lands 0-0.1 s after a chunk commit, so appends are cut mid-store, and a store that
a run completed is removed, so the next kill cuts an append again); after each
kill the visible state must be valid (the output absent, or complete and equal to the reference; committed
chunks all intact). Then the stage runs to completion and must equal the reference bit for bit, with no temp
leftovers. The figures: faults injected, rows lost, silent changes (a partial or different output seen).

The stages run from a copy of the project's packages taken when the campaign starts (``PYTHONPATH``), so an
edit of the working tree during the campaign cannot pass for a silent change (a reference made by one version
of the code, a rerun by another).

Run it alone: ``.venv/bin/python tests/reliability/campaign.py --kills 5 --seed 1`` (prints the figures as JSON).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from harness import COALA, ENV, REPO  # noqa: E402

FEATURES_YAML = "features:\n  chunk_rows: 4\n  max_tokens: 48\n  batch_size: 8\n  device: cpu\n  dtype: float32\n"
TRAIN_YAML = ("phase1:\n  n_patterns: 4\n  max_iter: 200\n  path_n_betas: 3\n  tol: 1.0e-3\n"
              "phase2:\n  beta_grid: [1.0]\n  gamma_grid: [0.0]\n  l2_grid: [1.0e-2, 1.0]\n  max_iter: 30\n")


@dataclass
class Figures:
    faults_injected: int = 0
    finished_before_kill: int = 0
    rows_lost: int = 0
    silent_changes: int = 0
    leftovers: int = 0
    per_stage: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def commands(root: Path, model: Path) -> dict[str, list[str]]:
    (root / "features.yaml").write_text(FEATURES_YAML)
    (root / "train.yaml").write_text(TRAIN_YAML)
    pairs, store = root / "pairs.parquet", root / "fs.zarr"
    return {
        "data": ["data", "build-edufeedback", "-i", str(REPO / "data/mathdial/test.jsonl"), "-f", "mathdial", "--limit", "40",
                 "-o", str(pairs)],
        "features": ["features", "extract", "--pairs", str(pairs), "--model", str(model), "--output", str(store),
                     "--config", str(root / "features.yaml"), "--quiet"],
        "train": ["train", "--features", str(store), "--pairs", str(pairs), "--output", str(root / "head"),
                  "--config", str(root / "train.yaml")],
        "evaluate": ["evaluate", "--head", str(root / "head"), "--features", str(store), "--pairs", str(pairs),
                     "--output", str(root / "report"), "--no-baselines", "--n-boot", "20"],
    }


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(stage: str, root: Path) -> dict | None:
    """What a stage's output holds now (None: absent); raises if it is visible but damaged."""
    from storage.feature_store import FeatureStore
    from storage.pairs import read_pairs, table_digest

    if stage == "data":
        p = root / "pairs.parquet"
        return None if not p.exists() else {"digest": table_digest(read_pairs(p)), "card": (root / "pairs.card.json").exists()}
    if stage == "features":
        p = root / "fs.zarr"
        if not (p / "zarr.json").exists():
            return None
        try:
            s = FeatureStore.open(p)
        except Exception as err:  # noqa: BLE001 - a creation killed before its attributes: nothing committed
            return {"half_created": str(err)[:80], "committed_rows": 0}
        bad = s.check_chunks()
        if bad:
            raise AssertionError(f"committed chunks damaged after a kill: {bad}")
        rows = sum(b - a for a, b in (s.chunk_bounds(c) for c in s.completed_chunks()))
        out = {"committed_rows": rows, "n_rows": s.n_rows}
        if s.is_complete:
            c, r = s.read_all()
            out["sha"] = hashlib.sha256(c.tobytes() + r.tobytes() + s.pair_ids().tobytes()).hexdigest()
        return out
    if stage == "train":
        p = root / "head" / "head.safetensors"
        return None if not (root / "head").exists() else {"weights": _sha(p), "json": (root / "head" / "head.json").exists()}
    p = root / "report"
    if not p.exists():
        return None
    names = sorted(f.name for f in p.iterdir())
    metrics = json.loads((p / "metrics.json").read_text()) if (p / "metrics.json").exists() else None
    return {"files": names, "accuracy": _accuracy(metrics)}


def _accuracy(metrics: object) -> object:
    if isinstance(metrics, dict):
        for k, v in metrics.items():
            if k == "accuracy" or (isinstance(k, str) and k.endswith("/accuracy")):
                return v
            found = _accuracy(v)
            if found is not None:
                return found
    return None


PACKAGES = ("coala_core", "storage", "coala_cli", "tasks", "flows")


def code_snapshot(base: Path) -> dict[str, str]:
    """Copy the project's packages under ``base/code``; the environment that runs the `coala` command from it."""
    src = base / "code"
    for name in PACKAGES:
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    return {**ENV, "PYTHONPATH": os.pathsep.join(p for p in (str(src), ENV.get("PYTHONPATH", "")) if p)}


def run(cmd: list[str], env: dict[str, str], timeout: float = 900) -> tuple[int, float, str]:
    t0 = time.monotonic()
    res = subprocess.run([COALA, *cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return res.returncode, time.monotonic() - t0, res.stderr


def _wait_first_commit(store: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Return once the store being written has a newly committed chunk (or the writer ended)."""
    from storage.feature_store import FeatureStore

    def committed() -> int:
        try:
            return len(FeatureStore.open(store, mode="r").completed_chunks())
        except Exception:  # noqa: BLE001 - not created yet
            return 0

    start = committed()
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline and committed() <= start:
        time.sleep(0.02)


def leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*.tmp")]


def campaign(base: Path, model: Path, *, kills: int, seed: int, stages: tuple[str, ...] = ("data", "features", "train", "evaluate")) -> Figures:
    rng = random.Random(seed)
    ref_root, root = base / "reference", base / "faulted"
    ref_root.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    ref_cmds, cmds = commands(ref_root, model), commands(root, model)
    env = code_snapshot(base)
    figs = Figures()
    order = ("data", "features", "train", "evaluate")
    for stage in order[: max(order.index(s) for s in stages) + 1]:
        rc, wall, err = run(ref_cmds[stage], env)
        if rc != 0:
            raise RuntimeError(f"reference {stage} failed: {err[-1500:]}")
        expected = snapshot(stage, ref_root)
        per = figs.per_stage.setdefault(stage, {"kills": 0, "finished_first": 0})
        for k in range(kills if stage in stages else 0):
            delay = rng.uniform(0.1, 1.1) * wall
            proc = subprocess.Popen([COALA, *cmds[stage]], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if stage == "features" and k % 2 == 1:  # every other kill lands while chunks are being committed
                _wait_first_commit(root / "fs.zarr", proc)
                delay = rng.uniform(0.0, 0.1)
            try:
                proc.wait(timeout=delay)
                per["finished_first"] += 1
                figs.finished_before_kill += 1
            except subprocess.TimeoutExpired:
                proc.kill()  # SIGKILL
                proc.wait()
                per["kills"] += 1
                figs.faults_injected += 1
            try:
                seen = snapshot(stage, root)
            except Exception as err:  # noqa: BLE001 - a damaged visible output is a silent change
                figs.silent_changes += 1
                figs.problems.append(f"{stage}: after a kill: {err}")
                continue
            if stage == "features" and seen and 0 < seen.get("committed_rows", 0) < seen.get("n_rows", 0):
                per["killed_mid_append"] = per.get("killed_mid_append", 0) + 1
            if seen is not None and stage != "features" and seen != expected:
                figs.silent_changes += 1
                figs.problems.append(f"{stage}: after a kill the output is {seen}, expected absent or {expected}")
            if stage == "features" and seen and seen.get("sha") is not None:
                if seen["sha"] != expected["sha"]:
                    figs.silent_changes += 1
                    figs.problems.append("features: a complete store differs from the reference after a kill")
                shutil.rmtree(root / "fs.zarr")  # complete: start over, so the next kill cuts an append again
        rc, _, err = run(cmds[stage], env)
        final = snapshot(stage, root) if rc == 0 else None
        if rc != 0 or final != expected:
            figs.silent_changes += 1
            figs.problems.append(f"{stage}: the rerun gave rc={rc} {final}, expected {expected}: {err[-500:]}")
        if stage == "features" and final and expected:
            figs.rows_lost += expected["n_rows"] - final.get("committed_rows", 0)
    left = leftovers(root)
    figs.leftovers = len(left)
    if left:
        figs.problems.append(f"temp leftovers: {left[:5]}")
    return figs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=5, help="kills per stage")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a new temp folder)")
    args = ap.parse_args()
    import tempfile

    from coala_core.testing import save_tiny_lm

    base = args.dir or Path(tempfile.mkdtemp(prefix="coala-campaign-"))
    model = save_tiny_lm(base / "tiny-llama")
    t0 = time.monotonic()
    figs = campaign(base, model, kills=args.kills, seed=args.seed)
    print(json.dumps({**figs.to_dict(), "seconds": round(time.monotonic() - t0, 1), "kills_per_stage": args.kills,
                      "seed": args.seed}, indent=2))


if __name__ == "__main__":
    main()
