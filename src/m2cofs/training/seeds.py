"""Where every random stream of a training run starts, in one place.

A run has one seed (``train.seed``). The network is built right after ``torch.manual_seed(seed)``
(so θ0, the shared start of both Stage-I paths, is a function of the seed). The patches of each
training loop are a pure function of (seed, the loop's *stream key*, epoch, index)
(:class:`~m2cofs.training.patches.PatchDataset`, :func:`~m2cofs.training.patches.epoch_batches`):
distinct keys give the loops distinct, reproducible patch streams. These numbers are part of what
makes a run repeat itself bit for bit, and changing one changes the trained weights.
"""

from __future__ import annotations

from m2cofs.training import stage0_autoencoder as s0
from m2cofs.training import stage1_independent as s1
from m2cofs.training import stage2_adaptation as s2
from m2cofs.training import stage3_unification as s3

#: The patch-stream key of each stage loop (``PatchDataset(..., stage=key)``, ``run_loop(..., stage_key)``).
STAGE_KEYS: dict[str, int] = {s0.NAME: 0, s1.FUSION: 1, s1.SEGMENTATION: 2, s2.SEG_TO_FUSION: 3,
                              s2.FUSION_TO_SEG: 4, s3.NAME: 5}

#: Stage III seeds torch with ``seed + UNIFICATION_SEED_OFFSET`` right before it builds the weight generator G.
UNIFICATION_SEED_OFFSET = 3

# The comparison's baselines train with the Stage-I patches (``STAGE_KEYS[s1.SEGMENTATION]``) but
# their loops' batch order takes keys of their own, apart from the stages' keys:
#: joint training (F + ψ + φ on one loss)
JOINT_KEY = 30
#: continual-learning methods: ``CONTINUAL_KEY_BASE + i`` for the i-th method of the group
CONTINUAL_KEY_BASE = 31
#: the peer segmentation networks
PEER_KEY = 40
#: the epoch whose patches the diagonal Fisher is estimated on (patches not seen in training order)
FISHER_EPOCH = 10_000
