"""The trust signal of ``m2cofs predict``, measured: reference ranges for the bundled model and
a table of signals per case (results/trust/RUN.md).

    python results/trust/measure.py standins ../shared/data /tmp/trust/standins   # out-of-domain stand-ins
    python results/trust/measure.py collect  ../shared/data /tmp/trust/cache       # the 19 glioma cases
    python results/trust/measure.py collect  /tmp/trust/standins /tmp/trust/cache
    python results/trust/measure.py reference /tmp/trust/cache                     # -> trust.json beside the model
    python results/trust/measure.py table /tmp/trust/cache > results/trust/table.md

``collect`` runs the bundled model on every case (sliding window, and the one mirrored pass the
trust check adds) and caches what the signals are computed from (model grid, float16), so
``reference`` and ``table`` are quick. The signals themselves are
:func:`m2cofs.inference.trust.trust_signals`, the function ``m2cofs predict`` calls.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HELD_OUT = "Brats18_CBICA_ABM_1"
MODEL = "brats-t1ce-flair"


def standins(data: Path, out: Path) -> None:
    """Out-of-domain stand-ins (no MS or metastasis scans are at hand), from the held-out case
    Brats18_CBICA_ABM_1 (t1ce, flair; BraTS layout) and ``m2cofs synth``."""
    import nibabel as nib
    from scipy import ndimage

    src = data / "brats2018" / HELD_OUT
    imgs = {m: nib.load(src / f"{HELD_OUT}_{m}.nii.gz") for m in ("t1ce", "flair")}
    arr = {m: np.asarray(i.dataobj).astype(np.float32) for m, i in imgs.items()}
    aff, hdr = imgs["flair"].affine, imgs["flair"].header
    brain = arr["flair"] > 0
    mid = 119  # the brain's left-right midline (x of its bounding box's centre); the tumour lies at x 140-187

    def write(cid: str, vols: dict[str, np.ndarray]) -> None:
        (out / cid).mkdir(parents=True, exist_ok=True)
        for m, v in vols.items():
            nib.save(nib.Nifti1Image(np.rint(v).astype(np.int16), aff, hdr), out / cid / f"{cid}_{m}.nii.gz")

    def mirrored(v: np.ndarray) -> np.ndarray:  # the tumour's hemisphere replaced by the other one, mirrored
        w = v.copy()
        w[mid:] = v[2 * mid - np.arange(mid, v.shape[0])]
        return w

    healthy = {m: mirrored(v) for m, v in arr.items()}
    write("standin_nolesion", healthy)
    # MS-like: the healthy brain with 12 small FLAIR-bright ovoid lesions in deep white matter (no enhancement)
    rng = np.random.default_rng(0)
    hb = ndimage.binary_erosion(healthy["flair"] > 0, iterations=20)
    centres = np.argwhere(hb)[rng.choice(int(hb.sum()), 12, replace=False)]
    grid = np.indices(brain.shape, dtype=np.float32)
    lesion = np.zeros(brain.shape, bool)
    for c in centres:
        r = rng.uniform(2.0, 5.0, 3)
        lesion |= sum(((grid[i] - c[i]) / r[i]) ** 2 for i in range(3)) <= 1
    ms = {m: v.copy() for m, v in healthy.items()}
    ms["flair"][lesion] = np.percentile(healthy["flair"][healthy["flair"] > 0], 99.7)
    ms["t1ce"][lesion] *= 0.85
    write("standin_ms_like", ms)
    print(f"standin_ms_like: {int(lesion.sum())} lesion voxels ({lesion.sum() / 1000:.1f} mL)")
    write("standin_swapped", {"t1ce": arr["flair"], "flair": arr["t1ce"]})
    # noise: smoothed random values inside the case's brain outline
    noise = {m: np.where(brain, 200 + 800 * ndimage.gaussian_filter(rng.random(brain.shape, dtype=np.float32), 2) , 0)
             for m in arr}
    write("standin_noise", noise)
    import subprocess

    subprocess.run([sys.executable, "-m", "m2cofs", "synth", str(out / "_synth"), "--cases", "1", "--size", "96",
                    "--modalities", "t1ce,flair", "--labels", "none", "--overwrite"], check=True)
    synth_case = next(p for p in (out / "_synth").iterdir() if p.is_dir())
    (out / "standin_phantom").mkdir(exist_ok=True)
    for m in ("t1ce", "flair"):
        img = nib.load(next(synth_case.glob(f"*_{m}.nii.gz")))
        nib.save(img, out / "standin_phantom" / f"standin_phantom_{m}.nii.gz")
    import shutil

    shutil.rmtree(out / "_synth")


def collect(data: Path, cache: Path) -> None:
    """Predict every case of ``data`` once (and once mirrored) and cache the model-grid arrays."""
    import time

    from m2cofs.data.dataset import MultiModalDataset
    from m2cofs.inference import Predictor
    from m2cofs.inference.trust import predict_mirrored

    p = Predictor(MODEL, device="cpu", log=None, progress=False)
    ds = MultiModalDataset(data, "auto", modalities=p.model.modalities, preprocess=p.model.preprocessing,
                           load_labels=False)
    cache.mkdir(parents=True, exist_ok=True)
    from m2cofs.inference import predict_array

    for i, cid in enumerate(ds.ids):
        if (cache / f"{cid}.npz").exists():
            continue
        t0 = time.time()
        case = ds.prepared(i)
        prob = predict_array(p.model, case.image, "cpu", tasks=["segmentation"])["seg_prob"]
        flip = predict_mirrored(p.model, case.image, "cpu")
        np.savez_compressed(cache / f"{cid}.npz", image=case.image.astype(np.float16), mask=case.mask,
                            prob=prob.astype(np.float16), flip=flip.astype(np.float16),
                            spacing=np.array(case.meta.spacing, dtype=np.float32))
        print(f"{cid}: {time.time() - t0:.1f} s", flush=True)


def _signals(cache: Path) -> dict[str, dict]:
    from m2cofs.inference.trust import trust_signals

    out = {}
    for f in sorted(cache.glob("*.npz")):
        z = np.load(f)
        out[f.stem] = trust_signals(z["image"].astype(np.float32), z["mask"], z["prob"].astype(np.float32),
                                    z["flip"].astype(np.float32), z["spacing"].tolist(), ["ET", "TC", "WT"])
    return out


def reference(cache: Path) -> None:
    """Reference ranges from the bundled model's 18 training cases -> ``trust.json`` beside the model."""
    from m2cofs.bundled import resolve_model
    from m2cofs.inference.trust import reference_ranges
    from m2cofs.io import atomic_write_json

    sig = _signals(cache)
    train = {k: v for k, v in sig.items() if not k.startswith("standin_") and k != HELD_OUT}
    assert len(train) == 18, sorted(train)
    ref = reference_ranges(list(train.values()))
    ref["made_by"] = ("results/trust/measure.py reference: the bundled model's predictions on its 18 training cases "
                      "(../shared/data without Brats18_CBICA_ABM_1)")
    ref["cases"] = sorted(train)
    path, _ = resolve_model(MODEL)
    ref["model_sha256"] = json.loads(Path(str(path) + ".json").read_text())["sha256"]
    atomic_write_json(Path(path).parent / "trust.json", ref)
    print(json.dumps(ref, indent=1))


def table(cache: Path) -> None:
    from m2cofs.bundled import resolve_model
    from m2cofs.inference.trust import SIGNALS, check_signals

    path, _ = resolve_model(MODEL)
    ref = json.loads((Path(path).parent / "trust.json").read_text())
    sig = _signals(cache)
    names = list(SIGNALS) + [k for k in next(iter(sig.values())) if k.startswith("median_")]
    print("| case | role | " + " | ".join(names) + " | flagged | reasons |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " | --- | --- |")
    order = sorted(sig, key=lambda k: (k.startswith("standin_"), k == HELD_OUT, k))
    for cid in order:
        s = sig[cid]
        reasons = check_signals(s, ref)
        role = "stand-in" if cid.startswith("standin_") else "held out" if cid == HELD_OUT else "training"
        cells = [f"{s[n]:.3g}" if s.get(n) is not None else "–" for n in names]
        print(f"| {cid} | {role} | " + " | ".join(cells) + f" | {'**yes**' if reasons else 'no'} | "
              f"{'; '.join(reasons)} |")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "standins":
        standins(Path(sys.argv[2]), Path(sys.argv[3]))
    elif cmd == "collect":
        collect(Path(sys.argv[2]), Path(sys.argv[3]))
    elif cmd == "reference":
        reference(Path(sys.argv[2]))
    elif cmd == "table":
        table(Path(sys.argv[2]))
    else:
        raise SystemExit(f"unknown step {cmd!r}")
