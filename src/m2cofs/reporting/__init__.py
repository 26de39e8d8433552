"""Pages: the self-contained evaluation report (HTML).

* :mod:`~m2cofs.reporting.html` — :func:`~m2cofs.reporting.html.render_evaluation_report`:
  ``report.html`` with embedded images and metric tables; no network needed to open it
  (:func:`~m2cofs.reporting.html.page` gives other pages, such as ``m2cofs compare``'s, the same
  skeleton and style). Its
  parts: :mod:`.sections` (each section), :mod:`.plots` (distributions: box plots, or dots
  below five cases), :mod:`.format` (the one number format), :mod:`.provenance` (which model,
  as ``m2cofs predict`` recorded it in ``predict.json``), :mod:`.ordering` (cases worst first,
  by mean Dice).

The case previews it embeds (three orthogonal slices of every source, the fused volume and the
segmentation overlay) are drawn by :mod:`m2cofs.previews`, which ``m2cofs predict`` uses too.
"""
