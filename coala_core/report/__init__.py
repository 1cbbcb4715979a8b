"""Evaluation reports: matplotlib PNG plots and a markdown report, returned as bytes."""

from coala_core.report.markdown import md_table, render_report
from coala_core.report.plots import beta_path_png, margin_histograms_png, reliability_png, training_curves_png

__all__ = ["beta_path_png", "margin_histograms_png", "md_table", "reliability_png", "render_report",
           "training_curves_png"]
