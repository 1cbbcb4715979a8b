"""The registered model loads with ``mlflow.pyfunc.load_model`` in a NEW virtualenv built only from the model's
own ``requirements.txt`` (no project checkout on the path, nothing installed by hand) and scores as here.

Slow: installing the pinned requirements (torch, transformers, mlflow, ...) from the package index takes
minutes (measured in benchmarks/RESULTS.md); run with ``-m slow``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from coala_testsupport.serving import ROWS, pipeline_config

pytestmark = pytest.mark.slow

LOAD = """
import json, sys
import pandas as pd
import mlflow.pyfunc
try:
    import coala_core  # noqa: F401
    sys.exit("coala_core importable before loading: the test would not show portability")
except ImportError:
    pass
model = mlflow.pyfunc.load_model(sys.argv[1])
rows = json.loads(sys.argv[2])
print(json.dumps(model.predict(pd.DataFrame(rows))["reward"].tolist()))
"""


def test_pyfunc_loads_in_a_fresh_virtualenv_from_its_own_requirements(registry, tiny_lm, tmp_path) -> None:
    import mlflow

    from tasks.scorer import register_scorer

    tracking, _, make, _ = registry
    reg = register_scorer(tracking, make(21, 0.6), {}, pipeline_config(tiny_lm, name="portable"))
    local = Path(mlflow.artifacts.download_artifacts(f"models:/portable/{reg.head_version}", dst_path=str(tmp_path / "model")))
    expected = mlflow.pyfunc.load_model(str(local)).predict(pd.DataFrame(ROWS))["reward"].tolist()

    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    t0 = time.perf_counter()
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(local / "requirements.txt")],
                         capture_output=True, text=True, timeout=3600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    print(f"fresh virtualenv: pip install -r requirements.txt took {time.perf_counter() - t0:.0f} s")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", LOAD, str(local), json.dumps(ROWS)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=900, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == pytest.approx(expected, rel=1e-6)
