"""Phase I of COALA: the convex two-layer ReLU network (method.md section 4), solved by ADMM.

Public: :func:`fit_phase1`, :func:`fit_phase1_path`, :class:`Phase1Config`, :class:`Phase1Result`, and the
row-source helpers (:class:`RowSource`, :func:`as_row_source`, :class:`PairArrays`).
"""

from coala_core.phase1.config import PAPER_PRESET, Phase1Config
from coala_core.phase1.fit import fit_phase1
from coala_core.phase1.path import beta_grid, fit_phase1_path
from coala_core.phase1.result import Phase1Result
from coala_core.phase1.source import ArrayRows, PairArrays, PairRows, RowSource, as_row_source

__all__ = [
    "PAPER_PRESET", "ArrayRows", "PairArrays", "PairRows", "Phase1Config", "Phase1Result", "RowSource",
    "as_row_source", "beta_grid", "fit_phase1", "fit_phase1_path",
]
