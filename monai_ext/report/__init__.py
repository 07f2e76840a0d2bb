"""
The bundle report: ``python -m monai_ext report bundles/<name>`` gathers a bundle's results (metrics tables, training
curves, robustness curves, ProtoSeg figures and tables, overlays of predictions) into one HTML page with its PNGs.
"""

from monai_ext.report.build import build_report

__all__ = ["build_report"]
