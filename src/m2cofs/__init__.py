"""m2cofs — M²-CoFS: one unified model for 3D multi-modal MRI fusion and segmentation.

Public entry points:

* :mod:`m2cofs.data` — finding, checking, loading and preprocessing multi-modal MRI cases.
* :mod:`m2cofs.synthetic` — brain-like multi-modal phantoms for demos and tests.
* :mod:`m2cofs.cli` — the ``m2cofs`` command line.
"""

from m2cofs.errors import M2CofsError

__version__ = "0.1.0"
__all__ = ["M2CofsError", "__version__"]
