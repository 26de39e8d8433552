"""``trunk="volume"``: Φ, F and ψ once per voxel over the whole volume, in tiles whose cores
give what one whole-volume pass would (:func:`plan_trunk_tiles`, :func:`trunk_over_volume`)."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from m2cofs.models.network import M2CoFSNet

TRUNK_TILE_VOXELS = 128 ** 3
"""Largest tile (core and halo) that ``trunk="volume"`` runs Φ → F → ψ on at once: about 1.1 GiB
of activations with the lite preset (≈ 600 B per voxel). Brain volumes on lite's 2 mm grid fit
in one tile; larger grids pay for the halos around the tiles."""


def plan_trunk_tiles(shape: tuple[int, ...], align: int, halo: int, max_voxels: int
                     ) -> list[tuple[tuple[slice, ...], tuple[slice, ...], tuple[slice, ...]]]:
    """Tiles that cover a volume of ``shape`` (each a multiple of ``align``).

    Returns ``(source, core_in_source, core)`` slices per tile: the region to compute (the core
    and up to ``halo`` voxels around it, within the volume), where the core lies inside that
    region, and where it lies in the volume. Cores start at multiples of ``align``; the longest
    core is halved until every source region holds at most ``max_voxels``, but no core gets
    narrower than ``2 · halo`` (below that the halos would cost more than 8× the cores) and an
    axis is split only where that makes the sources shorter along it; where the limit cannot be
    met so, it is exceeded. The whole volume is a single tile when it fits.
    """
    if any(s % align for s in shape):
        raise ValueError(f"shape {shape} is not a multiple of {align}")
    core = list(shape)
    floor = max(align, 2 * halo)

    def extent(c: int, s: int) -> int:
        return min(c + 2 * halo, s)

    while int(np.prod([extent(c, s) for c, s in zip(core, shape)])) > max_voxels:
        halved = {i: max(floor, -(-core[i] // (2 * align)) * align) for i in range(len(core))}
        can = [i for i in range(len(core)) if extent(halved[i], shape[i]) < extent(core[i], shape[i])]
        if not can:
            break
        i = max(can, key=lambda j: core[j])
        core[i] = halved[i]
    tiles = []
    for starts in itertools.product(*(range(0, s, c) for s, c in zip(shape, core))):
        src, inner, dst = [], [], []
        for a, c, s in zip(starts, core, shape):
            b = min(a + c, s)
            lo, hi = max(0, a - halo), min(s, b + halo)
            src.append(slice(lo, hi))
            inner.append(slice(a - lo, b - lo))
            dst.append(slice(a, b))
        tiles.append((tuple(src), tuple(inner), tuple(dst)))
    return tiles


def trunk_over_volume(net: M2CoFSNet, x: torch.Tensor, tasks: tuple[str, ...] = ("fusion", "segmentation"),
                      tile_voxels: int = TRUNK_TILE_VOXELS, buffers: torch.device | None = None, run=None
                      ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """F's features (for φ; with ``"segmentation"`` in ``tasks``) and ψ's fused volume (with
    ``"fusion"``; with a ``weights`` head ψ's source weights, (1, N, ...), instead; with a head that
    reads φ's probabilities its logits, to which the caller adds the path from φ's probabilities
    once φ has run over the features, which are then returned too) over the whole
    of ``x`` (1, N, X, Y, Z), one tile at a time
    (:func:`plan_trunk_tiles`, :meth:`M2CoFSNet.trunk_geometry`), kept on ``buffers`` (default:
    ``x``'s device). ``run(fn, t)`` applies a network part to a tile (default: ``fn(t)``)."""
    run = run or (lambda fn, t: fn(t))
    buffers = buffers or x.device
    align, halo = net.trunk_geometry()
    shape = tuple(x.shape[2:])
    padded = tuple(-(-s // align) * align for s in shape)
    xp = torch.nn.functional.pad(x, [p for s, q in zip(reversed(shape), reversed(padded)) for p in (0, q - s)])
    reads_seg = "fusion" in tasks and net.fusion_head.reads_seg
    z = torch.zeros((1, net.trunk_channels, *shape), device=buffers) if "segmentation" in tasks or reads_seg else None
    weights = net.fusion_head.kind == "weights"
    out_ch = x.shape[1] if weights else 1
    fused = torch.zeros((1, out_ch, *shape), device=buffers) if "fusion" in tasks else None
    head = net.fusion_head.weights if weights and not reads_seg else net.fusion_head  # reads_seg: ψ's own logits
    for src, inner, dst in plan_trunk_tiles(padded, align, halo, tile_voxels):
        keep = tuple(slice(d.start, min(d.stop, s)) for d, s in zip(dst, shape))  # inside the unpadded volume
        cut = (slice(None), slice(None)) + tuple(slice(i.start, i.start + k.stop - k.start) for i, k in zip(inner, keep))
        zt = run(net.trunk, xp[(slice(None), slice(None), *src)])
        if fused is not None:
            fused[(slice(None), slice(None), *keep)] = run(head, zt)[cut].to(buffers)
        if z is not None:
            z[(slice(None), slice(None), *keep)] = zt[cut].to(buffers)
        del zt
    return z, fused


