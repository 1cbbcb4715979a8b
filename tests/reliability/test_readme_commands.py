"""The README's reliability commands, exactly as written there (placeholders filled in)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
from harness import REPO, coala

from storage.feature_store import FeatureStore


def readme_command(prefix: str) -> str:
    found = [m for m in re.findall(r"`(coala [^`]+)`", (REPO / "README.md").read_text(encoding="utf-8")) if m.startswith(prefix)]
    assert found, f"README.md has no `{prefix} ...` command"
    return found[0]


def run_as_written(prefix: str, values: dict[str, str]):
    argv = [values.get(tok, tok) for tok in shlex.split(readme_command(prefix))]
    return coala(*argv[1:])


def test_readme_verify_repair_command(cli, tmp_path: Path, pairs_file, tiny_lm):
    from test_verify_cli import extract

    store = tmp_path / "fs.zarr"
    before = extract(cli, tmp_path, pairs_file, tiny_lm, store).read_all()
    (store / "chosen" / "c" / "1" / "0").unlink()
    res = run_as_written("coala features verify ", {"STORE": str(store), "P": str(pairs_file), "ID_OR_PATH": str(tiny_lm)})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["repaired_chunks"] == [1]
    after = FeatureStore.open(store).read_all()
    for a, b in zip(before, after, strict=True):  # batch size is a speed knob: padding moves the last bits only
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_readme_runs_repair_command(tmp_path: Path):
    res = run_as_written("coala runs repair ", {"W": str(tmp_path / "wd")})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"sessions": 0, "flow_runs": 0, "mlflow_runs": 0,
                                                               "flow_run_ids": [], "mlflow_run_ids": []}
