"""Backend fixture for the phase1 tests."""

from __future__ import annotations

import numpy as np
import pytest
from phase1_helpers import cuda_available


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):  # noqa: ANN001, ANN201
    if request.param == "numpy":
        return np
    if not cuda_available():
        pytest.skip("cupy with CUDA not available")
    import cupy

    return cupy
