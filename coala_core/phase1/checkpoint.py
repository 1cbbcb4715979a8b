"""ADMM checkpoints as ``.npz`` without pickle: state arrays, history and a problem fingerprint.

Written atomically (temporary file, then rename) and read with ``allow_pickle=False``. A checkpoint is
only resumed when its fingerprint (n, d, P, beta, program, digest of the gates) matches the problem.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from coala_core.errors import ProvenanceMismatchError, StoreError
from coala_core.phase1.admm import ADMMState
from coala_core.phase1.source import get_xp, to_numpy

_ARRAYS = ("u", "z", "lam", "s", "nu", "GtSnu", "z_sum")


def fingerprint(n: int, d: int, gates: np.ndarray, beta: float, program: str) -> str:
    h = hashlib.sha256(np.ascontiguousarray(gates, dtype=np.float64).tobytes()).hexdigest()[:16]
    return json.dumps({"n": n, "d": d, "P": int(gates.shape[1]), "beta": beta, "program": program, "gates": h},
                      sort_keys=True)


def save_checkpoint(path: str | Path, state: ADMMState, history: dict[str, list[float]], fp: str) -> None:
    """Atomically write ``state``, ``history`` and fingerprint ``fp`` to ``path`` (.npz)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {k: to_numpy(getattr(state, k)) for k in _ARRAYS}
    arrays["scalars"] = np.array([state.rho, state.k, state.n_avg], dtype=np.float64)
    arrays["fingerprint"] = np.frombuffer(fp.encode(), dtype=np.uint8)
    for key, vals in history.items():
        arrays[f"hist__{key}"] = np.asarray(vals, dtype=np.float64)
    fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".npz.tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: str | Path, fp: str, like: Any) -> tuple[ADMMState, dict[str, list[float]]]:
    """Read a checkpoint written by :func:`save_checkpoint`; arrays go to the backend of ``like``."""
    p = Path(path)
    try:
        data = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise StoreError(f"{p}: not a readable checkpoint ({err})") from None
    with data:
        got = bytes(data["fingerprint"]).decode()
        if got != fp:
            raise ProvenanceMismatchError(f"{p}: checkpoint is for a different problem: expected {fp}, got {got}")
        xp = get_xp(like)
        arrs = {k: xp.asarray(data[k]) for k in _ARRAYS}
        rho, k, n_avg = (float(x) for x in data["scalars"])
        hist = {name[6:]: data[name].tolist() for name in data.files if name.startswith("hist__")}
    return ADMMState(rho=rho, k=int(k), n_avg=int(n_avg), **arrs), hist
