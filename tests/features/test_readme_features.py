"""The README's feature command, exactly as written there, on a tiny model (whose 2 blocks make layer 15 a
one-line error; with layers -1,1 it writes the documented layout)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from tiny_lm import make_pairs

from storage import FeatureStore, write_pairs

ROOT = Path(__file__).resolve().parents[2]
COALA = Path(sys.executable).with_name("coala")


def readme_command(needle: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = [m for m in re.findall(r"`(coala features extract [^`]+)`", text) if needle in m]
    assert found, f"README.md has no `coala features extract ...` command with {needle}"
    return found[0]


def test_readme_feature_command_runs_as_written(tiny_model_dir, tmp_path):
    command = readme_command("--logprob-features")
    assert command == ("coala features extract --pairs P --model ID_OR_PATH --output STORE --pooling response_mean "
                       "--layers -1,15 --logprob-features")
    pairs = tmp_path / "pairs.parquet"
    write_pairs(make_pairs(9), pairs)
    # the tiny model has 2 blocks: hidden state 15 does not exist, and the command says so in one line
    values = {"P": str(pairs), "ID_OR_PATH": str(tiny_model_dir), "STORE": str(tmp_path / "feat.zarr")}
    argv = [values.get(tok, tok) for tok in shlex.split(command)]
    bad = subprocess.run([str(COALA), *argv[1:], "--quiet"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert bad.returncode == 1 and "layers" in bad.stderr and "15" in bad.stderr and "Traceback" not in bad.stderr
    argv = [("-1,1" if tok == "-1,15" else tok) for tok in argv]
    out = subprocess.run([str(COALA), *argv[1:], "--quiet"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["complete"]
    store = FeatureStore.open(tmp_path / "feat.zarr")
    prov = store.provenance
    assert store.dim == 2 * 32 + 2 and prov["layers"] == [-1, 1] and prov["pooling"] == "response_mean"
    assert prov["aux_columns"] == ["loglik_mean", "pmi_mean"] and prov["layer_norm"] == "rms"
    chosen, _ = store.read_all()
    rms = np.sqrt((chosen[:, :32].astype(np.float64) ** 2).mean(1))
    np.testing.assert_allclose(rms, 1.0, rtol=1e-4)  # each layer block RMS-normalised
    assert np.all(chosen[:, -2] < 0)  # mean log-likelihoods
