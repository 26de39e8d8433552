"""Joint multi-task training: F shared by both heads and trained on L_F + η·L_S from the start.

The classic hard-parameter-sharing multi-task baseline (Caruana, "Multitask learning", Machine
Learning 1997): the frozen encoders Φ, one F, the fusion head ψ and the segmentation head φ;
F, ψ and φ are trained together from the shared initialisation θ0 on the Stage-III task losses
without G, the SI terms or L_M. With the same η as Stage III (``train.eta``, 2) it isolates
what M²-CoFS's staged unification adds.
"""

from __future__ import annotations

from m2cofs.losses import FusionLoss, make_seg_loss
from m2cofs.models.network import M2CoFSNet
from m2cofs.training.stage1_independent import PathTask, masked_seg_loss

NAME = "joint_multitask"


class JointTask(PathTask):
    """F + ψ + φ on L = L_F + η·L_S (a :class:`~m2cofs.training.engine.StageTask`)."""

    def __init__(self, net: M2CoFSNet, fusion_loss: FusionLoss | None = None, eta: float = 2.0, seg_loss: str = "dice"):
        net.fusion_head.requires_grad_(True)
        net.seg_head.requires_grad_(True)
        super().__init__(net, "fusion_head", None, None, True)
        self.seg_head = net.seg_head
        self.trained = ("fusion", "fusion_head", "seg_head")
        self.fusion_loss, self.eta = fusion_loss if fusion_loss is not None else FusionLoss(), float(eta)
        self.loss_fn = make_seg_loss(seg_loss)

    def forward(self, image, target, has_label):
        z = self.features(image)
        lf, fparts = self.fusion_loss(self.fusion_head.fuse(z, image), image)
        ls = masked_seg_loss(self.loss_fn, self.seg_head(z), target, has_label)
        parts = {"fusion": float(lf.detach()), "seg": float(ls.detach()), **fparts}
        return lf + self.eta * ls, parts
