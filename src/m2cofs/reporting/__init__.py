"""Pictures and pages: case previews (PNG) and the self-contained evaluation report (HTML).

* :mod:`~m2cofs.reporting.previews` — :func:`save_case_preview` / :func:`render_case_preview_png`:
  three orthogonal slices of every source, the fused volume and the segmentation overlay.
* :mod:`~m2cofs.reporting.html` — :func:`render_report`: ``report.html`` with embedded images,
  metric tables and box plots; no network needed to open it.
"""

from m2cofs.reporting.previews import render_case_preview_png, save_case_preview

__all__ = ["render_case_preview_png", "save_case_preview"]
