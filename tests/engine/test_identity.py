"""Identity and caching: one digest per head across processes; a core source edit invalidates the cache."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import tasks.caching as caching
from coala_core.engine.spec import HeadSpec
from storage.heads import canonical_digest, head_digest
from tasks.training import phase1_task

ROOT = Path(__file__).resolve().parents[2]

WRITE_HEAD = textwrap.dedent("""
    import sys
    import numpy as np
    from coala_core.phase2 import random_relu_head
    from storage.heads import head_digest, save_head
    head = random_relu_head(6, 4, seed=1, features=np.random.default_rng(0).standard_normal((30, 6)))
    head = head.with_theta2(np.linspace(-1, 1, 4), beta=2.5)
    save_head(sys.argv[1], head, config={"phase2": {"beta": 2.5, "l2": 0.1}, "phase1": {"n_patterns": 2}},
              provenance={"model_id": "m"}, metrics={"acc": 0.5})
    print(head_digest(sys.argv[1]))
""")


def test_two_processes_writing_the_same_head_give_one_digest(tmp_path):
    digests = []
    for name in ("a", "b"):
        out = subprocess.run([sys.executable, "-c", WRITE_HEAD, str(tmp_path / name)], capture_output=True, text=True,
                             cwd=ROOT, check=True, env={"PYTHONHASHSEED": str(len(name) + ord(name)), "PATH": "/usr/bin"})
        digests.append(out.stdout.strip())
    assert digests[0] == digests[1] == head_digest(tmp_path / "a") and len(digests[0]) == 64
    assert (tmp_path / "a" / "head.safetensors").read_bytes() == (tmp_path / "b" / "head.safetensors").read_bytes()


def test_head_digest_follows_tensors_and_config_not_metrics():
    t = {"theta1": np.ones((3, 2)), "theta2": np.array([1.0, -1.0])}
    meta = {"format": 1, "beta": 1.0, "config": {"phase2": {"l2": 0.1}}, "metrics": {"acc": 0.5}}
    base = canonical_digest(t, meta)
    assert canonical_digest(dict(reversed(list(t.items()))), {**meta, "metrics": {"acc": 0.9}}) == base
    assert canonical_digest({**t, "theta2": np.array([1.0, -1.0 + 1e-12])}, meta) != base
    assert canonical_digest(t, {**meta, "config": {"phase2": {"l2": 0.2}}}) != base
    assert canonical_digest({**t, "theta2": t["theta2"].astype(np.float32)}, meta) != base


def _phase1_key(inputs):
    ctx = SimpleNamespace(task=phase1_task)
    return caching.DigestInputs(exclude=["workdir", "output", "tracking"]).compute_key(ctx, inputs, {})


def test_editing_a_core_source_file_invalidates_the_phase1_cache(tmp_path, monkeypatch):
    for pkg in ("coala_core", "storage"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(caching, "SOURCE_ROOTS", [tmp_path / "coala_core", tmp_path / "storage"])
    spec = HeadSpec()
    inputs = {"config": spec.phase1, "train": spec.train, "workdir": tmp_path / "w1"}
    before = _phase1_key(inputs)
    assert _phase1_key({**inputs, "workdir": tmp_path / "w2"}) == before  # location is not identity
    admm = tmp_path / "coala_core" / "phase1" / "admm.py"
    admm.write_text(admm.read_text() + "\n# a fix in the solver\n")
    after = _phase1_key(inputs)
    assert after != before
    heads = tmp_path / "storage" / "heads.py"
    heads.write_text(heads.read_text() + "\n# a storage change\n")
    assert _phase1_key(inputs) not in (before, after)
    assert _phase1_key({**inputs, "config": spec.phase1.replace(n_patterns=3)}) != _phase1_key(inputs)
