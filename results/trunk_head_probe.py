#!/usr/bin/env python
"""Why ``--trunk volume`` segments worse: is it only that the heads never saw such features?

    python results/trunk_head_probe.py --run runs/compare_plugin/fold0/m2cofs --data ../shared/data \
        --held-out brats2013_pat0004 > results/trunk_modes/head_probe.txt

Takes a finished run's θU and trains its segmentation head φ alone (Φ and F fixed) for
``--steps`` more steps on the other cases, once on features computed over the whole volume
(what ``--trunk volume`` feeds φ) and once on features computed inside each patch (what the
sliding window feeds it): patches of the training size, 80% centred on tumour, Dice loss,
AdamW. Then it scores the held-out case with both trunk modes: raw whole-tumour (and ET, TC)
Dice on the model grid, thresholded at 0.5, no post-processing. A probe, not a method: nothing
it trains is saved.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch


def regions(label: np.ndarray) -> np.ndarray:
    """ET, TC, WT of a BraTS label map (2013 and 2017+ conventions alike: 4 enhancing; 1 and 3
    necrotic / non-enhancing core; 2 oedema)."""
    return np.stack([label == 4, np.isin(label, [1, 3, 4]), label > 0]).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished run folder (its unified.ckpt)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--held-out", required=True, help="the case id the run did not train on")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from monai.losses import DiceLoss

    from m2cofs.data import MultiModalDataset, PreprocessConfig
    from m2cofs.inference import load_model, predict_array, trunk_over_volume

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = load_model(f"{args.run}/unified.ckpt")
    pre = PreprocessConfig.from_dict(model.meta["preprocessing"])
    ds = MultiModalDataset(args.data, modalities=model.modalities, preprocess=pre, load_labels=True)
    cases = {c.id: c for c in (ds.prepared(i) for i in range(len(ds)))}
    train_ids = [c for c in cases if c != args.held_out]
    roi = tuple(model.config.data.patch_size)
    target = regions(cases[args.held_out].label) > 0

    def score(m) -> str:
        out = []
        for trunk in ("window", "volume"):
            s = predict_array(m, cases[args.held_out].image, trunk=trunk)["seg_prob"] > 0.5
            d = [2 * (s[i] & target[i]).sum() / max(s[i].sum() + target[i].sum(), 1) for i in range(3)]
            out.append(f"{trunk}: ET {d[0]:.3f} TC {d[1]:.3f} WT {d[2]:.3f}")
        return " | ".join(out)

    print(f"held out {args.held_out}; θU as trained: {score(model)}", flush=True)

    def patch(source: dict, cid: str):
        lab = regions(cases[cid].label)
        shape = lab.shape[1:]
        fg = np.argwhere(lab[2] > 0)
        if len(fg) and rng.random() < 0.8:
            c = fg[rng.integers(len(fg))]
            start = [int(np.clip(c[i] - roi[i] // 2, 0, max(shape[i] - roi[i], 0))) for i in range(3)]
        else:
            start = [int(rng.integers(0, max(shape[i] - roi[i], 0) + 1)) for i in range(3)]
        sl = (slice(None),) + tuple(slice(s, s + r) for s, r in zip(start, roi))
        f, y = source[cid][sl], torch.from_numpy(lab[sl])
        pad = [v for r, n in zip(reversed(roi), reversed(f.shape[1:])) for v in (0, r - n)]
        return torch.nn.functional.pad(f, pad), torch.nn.functional.pad(y, pad)

    for mode in ("volume", "window"):
        m = copy.deepcopy(model)
        net = m.net.to(memory_format=torch.contiguous_format)
        with torch.inference_mode():
            if mode == "volume":  # F's features over each whole training volume, as --trunk volume computes them
                source = {cid: trunk_over_volume(net, torch.from_numpy(cases[cid].image)[None], ("segmentation",))[0][0].clone()
                          for cid in train_ids}
            else:  # the images: the features are computed inside each patch, as in the sliding window
                source = {cid: torch.from_numpy(cases[cid].image).clone() for cid in train_ids}
        opt = torch.optim.AdamW(net.seg_head.parameters(), lr=args.lr, weight_decay=1e-5)
        loss_fn = DiceLoss(sigmoid=True)
        net.train()
        for _ in range(args.steps):
            xs, ys = zip(*[patch(source, train_ids[rng.integers(len(train_ids))]) for _ in range(2)])
            x, y = torch.stack(xs), torch.stack(ys)
            if mode == "window":
                with torch.no_grad():
                    x = net.trunk(x)
            loss = loss_fn(net.seg_head(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval().to(memory_format=torch.channels_last_3d)
        print(f"φ + {args.steps} steps on {mode} features: {score(m)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
