"""The targets of the segmentation (#30) and fusion (#31) issues, measured on a finished ``m2cofs compare`` folder.

Reads ``results.json`` (per-case metrics of every method) and each fold's training record, and
times one prediction of a real 240×240×155 case with θU (both outputs) against the fold's
trained SegResNet-16 (segmentation), round-robin in one process, through the same
``predict_case`` (preprocessing done, network + sliding window + post-processing + return to
the input grid). Writes ``targets.md`` and ``targets.json``. Usage:

    python results/cv19/targets.py --compare runs/cv19 --data ../shared/data --out results/cv19 [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

FUSION = ["Q_MI", "Q_TE", "Q_NCIE", "Q_G", "MI", "VIF"]
RULES = ["mean", "pca", "laplacian"]
ALL_RULES = ["mean", "max", "pca", "laplacian"]


def means(per_case: dict, method: str, cols: list[str]) -> dict[str, float]:
    rows = per_case.get(method, {})
    return {c: float(np.nanmean([r.get(c, np.nan) for r in rows.values()])) if rows else float("nan") for c in cols}


def fold_seconds(compare: Path) -> list[dict]:
    out = []
    for fold in sorted(compare.glob("fold*/m2cofs/summary.json"), key=lambda p: int(p.parts[-3][4:])):
        s = json.loads(fold.read_text())
        peer_log = fold.parents[1] / "methods" / "segresnet"
        out.append({"fold": fold.parts[-3], "m2cofs_seconds": round(sum(s["stage_seconds"].values()), 1),
                    "stage_seconds": s["stage_seconds"], "peer_dir": str(peer_log)})
    return out


def time_predictions(compare: Path, data: str, case_id: str, repeats: int) -> dict:
    import torch

    from m2cofs.baselines.peers import build_peer
    from m2cofs.checkpoint import load_tensors
    from m2cofs.compare.predict import PeerNet
    from m2cofs.inference import LoadedModel, load_model, predict_case

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from common import interleaved, med

    fold = compare / "fold0"
    unified = load_model(fold / "m2cofs" / "unified.ckpt")
    ds = unified.dataset(data, ids=[case_id])
    case, source = ds.prepared_with_source(0)
    regions = list(unified.convention.regions)
    net = build_peer("segresnet", len(unified.modalities), len(regions))
    net.load_state_dict(load_tensors(fold / "methods" / "segresnet" / "peer.safetensors"))
    meta = {"tasks": ["segmentation"], "modalities": unified.modalities, "regions": regions,
            "label_convention": unified.meta["label_convention"], "kind": "peer_segresnet"}
    peer = LoadedModel(PeerNet(net).eval(), meta, unified.config, fold / "methods" / "segresnet" / "peer.safetensors")
    torch.manual_seed(0)
    times = interleaved({"m2cofs_both_outputs": lambda: predict_case(unified, case, unified.convention, source=source),
                         "segresnet16": lambda: predict_case(peer, case, unified.convention)}, repeats)
    t = {k: med(v) for k, v in times.items()}
    return {"case": case_id, "input_shape": list(source.images[0].shape), "seconds": t, "all_seconds": times,
            "ratio": t["m2cofs_both_outputs"] / t["segresnet16"], "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--compare", required=True, type=Path)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--case", default="Brats18_CBICA_ABM_1", help="a held-out case of fold 0 (240×240×155)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-timing", action="store_true")
    a = ap.parse_args(argv)
    res = json.loads((a.compare / "results.json").read_text())
    pc = res["per_case"]
    fcols = [f"volume/{m}" for m in FUSION]
    seg = ["Dice/ET", "Dice/TC", "Dice/WT"]
    u, s_, f_, peer = (means(pc, m, seg + fcols) for m in ("m2cofs", "seg_specialist", "fusion_specialist", "segresnet"))
    rules = {r: means(pc, r, fcols) for r in ALL_RULES + ["copy1", "copy2"] if r in pc}
    n = len(pc["m2cofs"])
    rows = []

    def row(target: str, measured: str, met: bool) -> None:
        rows.append({"target": target, "measured": measured, "met": bool(met)})

    rcols = ["retention/t1ce", "retention/flair", "retention/both"]
    ret = {m: means(pc, m, rcols) for m in ["m2cofs", "fusion_specialist", *ALL_RULES, "copy1", "copy2"] if m in pc}
    both_u = [r.get("retention/both", np.nan) for r in pc["m2cofs"].values()]
    both_u = [b for b in both_u if np.isfinite(b)]
    row("θU WT Dice ≥ SegResNet-16", f"{u['Dice/WT']:.3f} vs {peer['Dice/WT']:.3f}", u["Dice/WT"] >= peer["Dice/WT"])
    for r in ("TC", "ET"):
        d = u[f"Dice/{r}"] - peer[f"Dice/{r}"]
        row(f"θU {r} Dice ≥ SegResNet-16 − 0.02", f"{u[f'Dice/{r}']:.3f} vs {peer[f'Dice/{r}']:.3f} ({d:+.3f})", d >= -0.02)
    row("θU WT Dice ≥ θS", f"{u['Dice/WT']:.3f} vs {s_['Dice/WT']:.3f}", u["Dice/WT"] >= s_["Dice/WT"])
    for r in RULES:
        if r not in rules:
            continue
        worse = [m for m in FUSION if u[f"volume/{m}"] < rules[r][f"volume/{m}"]]
        row(f"θU ≥ {r} on all six fusion metrics", "below on " + ", ".join(worse) if worse else "all six ≥", not worse)
    for m in ("Q_G", "VIF"):
        best = max(ALL_RULES, key=lambda r: rules.get(r, {}).get(f"volume/{m}", -np.inf))
        row(f"θU ≥ every classic rule on {m}", f"{u[f'volume/{m}']:.4f} vs best rule {best} {rules[best][f'volume/{m}']:.4f}",
            u[f"volume/{m}"] >= rules[best][f"volume/{m}"])
    if both_u:
        mu = float(np.mean(both_u))
        row("θU retention 'both' ≥ 0.75 (mean)", f"{mu:.3f}", mu >= 0.75)
        row("θU retention 'both' ≥ 0.5 on every case", f"min {min(both_u):.3f} ({sum(b < 0.5 for b in both_u)} of {len(both_u)} below)",
            min(both_u) >= 0.5)
        others = {m: v["retention/both"] for m, v in ret.items() if m not in ("m2cofs", "fusion_specialist")}
        best = max(others, key=lambda m: others[m]) if others else None
        if best:
            row("θU retention 'both' above every classic rule and copy-one-source", f"{mu:.3f} vs best {best} {others[best]:.3f}",
                mu > others[best])
    if "mean" in rules:
        worse = [m for m in ("Q_MI", "Q_G", "VIF") if u[f"volume/{m}"] < rules["mean"][f"volume/{m}"]]
        row("θU ≥ mean fusion on Q_MI, Q_G and VIF", ", ".join(f"{m} {u[f'volume/{m}']:.3f} vs {rules['mean'][f'volume/{m}']:.3f}"
                                                           for m in ("Q_MI", "Q_G", "VIF")), not worse)
    rel = {m: u[f"volume/{m}"] / f_[f"volume/{m}"] - 1 for m in FUSION}
    row("θU within 2% of θF (six metrics)", ", ".join(f"{m} {v:+.1%}" for m, v in rel.items()), all(v >= -0.02 for v in rel.values()))

    folds = fold_seconds(a.compare)
    timing = None if a.no_timing else time_predictions(a.compare, a.data, a.case, a.repeats)
    if timing:
        row("prediction time ratio θU (both outputs) / SegResNet-16 ≤ 2",
            f"{timing['seconds']['m2cofs_both_outputs']:.1f} s / {timing['seconds']['segresnet16']:.1f} s = {timing['ratio']:.2f}",
            timing["ratio"] <= 2)

    lines = [f"# Targets of the segmentation (#30) and fusion (#31) issues, {n} held-out cases ({len(fold_seconds(a.compare))} of {len(res['folds'])} folds finished)", "",
             "| target | measured (means over held-out cases) | met |", "| --- | --- | --- |"]
    lines += [f"| {r['target']} | {r['measured']} | {'yes' if r['met'] else '**no**'} |" for r in rows]
    lines += ["", "| method | " + " | ".join(seg + FUSION) + " |", "| --- |" + " --- |" * (len(seg) + len(FUSION))]
    for name, vals in [("θU", u), ("θS", s_), ("θF", f_), ("SegResNet-16", peer), *rules.items()]:
        cells = [f"{vals.get(c, np.nan):.3f}" if np.isfinite(vals.get(c, np.nan)) else "—" for c in seg + fcols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if ret:
        lines += ["", "| method | retention T1ce | retention FLAIR | retention both |", "| --- | --- | --- | --- |"]
        for name, vals in ret.items():
            lines.append(f"| {name} | " + " | ".join(f"{vals[c]:.3f}" for c in rcols) + " |")
    lines += ["", "| fold | M²-CoFS training (s, = SegResNet-16's budget) | of which segmentation path (Stage I seg + II F→S + III) |",
              "| --- | --- | --- |"]
    for f in folds:
        st = f["stage_seconds"]
        segpart = st.get("stage1_segmentation", 0) + st.get("stage2_fusion_to_seg", 0) + st.get("stage3_unification", 0)
        lines.append(f"| {f['fold']} | {f['m2cofs_seconds']:.0f} | {segpart:.0f} ({segpart / f['m2cofs_seconds']:.0%}) |")
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "targets.md").write_text("\n".join(lines) + "\n")
    (a.out / "targets.json").write_text(json.dumps({"rows": rows, "means": {"m2cofs": u, "seg_specialist": s_,
                                                    "fusion_specialist": f_, "segresnet": peer, **rules},
                                                    "retention": ret,
                                                    "folds": folds, "timing": timing,
                                                    "written": time.strftime("%Y-%m-%d %H:%M")}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
