"""Baselines for comparison with M²-CoFS, each on the same network parts and data
(docs/baselines.md):

* :mod:`~m2cofs.baselines.classical` — fusion without learning (mean, max, PCA, Laplacian pyramid) and
  the copy-one-source reference;
* :mod:`~m2cofs.baselines.merging` — weight-space unification of F (average, task arithmetic,
  TIES, Fisher) and the diagonal Fisher;
* :mod:`~m2cofs.baselines.continual` — one task after the other with one F (fine-tuning, EWC,
  SI, LwF);
* :mod:`~m2cofs.baselines.joint` — joint multi-task training of F on L_F + η·L_S;
* :mod:`~m2cofs.baselines.peers` — MONAI SegResNet / UNet trained for segmentation alone.
"""

from m2cofs.baselines.classical import CLASSICAL_FUSION, COPY_SOURCE, copy_source, fuse_laplacian, fuse_max, fuse_mean, fuse_pca
from m2cofs.baselines.continual import KINDS as CONTINUAL_KINDS
from m2cofs.baselines.continual import first_task_fisher, make_continual_task
from m2cofs.baselines.joint import JointTask
from m2cofs.baselines.merging import (average, diagonal_fisher, fisher_merging, shared_initialisation, task_arithmetic,
                                      ties_merging)
from m2cofs.baselines.peers import PEERS, PeerTask, build_peer

__all__ = [
    "CLASSICAL_FUSION", "COPY_SOURCE", "copy_source", "fuse_mean", "fuse_max", "fuse_pca", "fuse_laplacian",
    "average", "task_arithmetic", "ties_merging", "fisher_merging", "diagonal_fisher", "shared_initialisation",
    "CONTINUAL_KINDS", "make_continual_task", "first_task_fisher",
    "JointTask",
    "PEERS", "build_peer", "PeerTask",
]
