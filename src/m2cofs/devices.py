"""Device facts shared by training and inference (one place, so that both pick the same
precision on the same card)."""

from __future__ import annotations

import torch


def autocast_dtype(device: str | torch.device) -> torch.dtype | None:
    """Mixed precision on ``device``: bf16 on CUDA cards that support it, fp16 on older ones
    (training adds a gradient scaler), none (fp32) on CPUs — bf16 autocast is many times slower
    on CPUs without native bf16 kernels."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
