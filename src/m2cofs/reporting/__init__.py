"""Pictures and pages: case previews (PNG) and the self-contained evaluation report (HTML).

* :mod:`~m2cofs.reporting.previews` — :func:`save_case_preview` / :func:`render_case_preview_png`:
  three orthogonal slices of every source, the fused volume and the segmentation overlay.
* :mod:`~m2cofs.reporting.html` — :func:`~m2cofs.reporting.html.render_evaluation_report`:
  ``report.html`` with embedded images and metric tables; no network needed to open it
  (:func:`~m2cofs.reporting.html.page` gives other pages, such as ``m2cofs compare``'s, the same
  skeleton and style). Its
  parts: :mod:`.sections` (each section), :mod:`.plots` (distributions: box plots, or dots
  below five cases), :mod:`.format` (the one number format), :mod:`.provenance` (which model,
  recorded by ``m2cofs predict`` in ``predict.json``), :mod:`.ordering` (cases worst first, by
  mean Dice).
"""

from m2cofs.reporting.previews import render_case_preview_png, save_case_preview

__all__ = ["render_case_preview_png", "save_case_preview"]
