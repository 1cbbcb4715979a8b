"""Array backends chosen per call from the data (numpy, or cupy when the arrays are on a CUDA device).

:func:`get_xp` names the namespace of some arrays; :func:`cuda_available` says whether cupy is installed and
sees a device; :func:`resolve_backend` turns a Phase I config's ``backend: auto`` into ``cupy`` on such a
machine (so ``coala train`` and the pipeline run Phase I on the GPU without a config change) and leaves an
explicit ``numpy`` or ``cupy`` alone. cupy is imported lazily; nothing here is a process-wide switch.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy as np


def get_xp(*arrays: Any) -> ModuleType:
    """The array namespace of ``arrays``: cupy when any of them is a cupy array, else numpy."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy

            return cupy
    return np


def to_numpy(a: Any) -> np.ndarray:
    """A numpy array of a numpy or cupy array (a device-to-host copy for cupy)."""
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)


@functools.lru_cache(maxsize=1)
def cuda_available() -> bool:
    """True when cupy imports and ``cupy.cuda.is_available()`` (a CUDA device is visible)."""
    try:
        import cupy
    except Exception:  # noqa: BLE001 - any import failure means no usable cupy
        return False
    try:
        return bool(cupy.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken driver is no device
        return False


def resolve_backend(config: Any) -> Any:
    """``config`` (a Phase I config) with ``backend: auto`` resolved: ``cupy`` when a CUDA device is usable,
    else the config unchanged (auto then follows the data, which the feature store gives as numpy)."""
    if getattr(config, "backend", None) == "auto" and cuda_available():
        return config.replace(backend="cupy")
    return config
