"""What the pipeline tests of several folders (tests/flows, tests/observability) share: the repository root,
the tiny pipeline config and its overrides for a tiny model and a test's own work folder.

Test modules import these from here, not ``from conftest import ...``: the folders' conftest.py files have no
package, so with several folders in one pytest run ``conftest`` is whichever of them was imported last."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
TINY_CONFIG = REPO / "configs" / "tiny.yaml"


def tiny_overrides(model: Path, workdir: Path, **extra: object) -> dict[str, object]:
    """Pipeline overrides: the tiny model, the test's work folder, no system metrics, and ``extra``."""
    return {"features.model": str(model), "run.workdir": str(workdir), "run.system_metrics": False, **extra}
