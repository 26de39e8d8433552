"""Case previews (PNG) and report.html: self-contained valid HTML5, and rendered by headless
Chromium with every image decoded and every table present.

Chromium: ``/usr/bin/chromium`` (Debian package ``chromium``). Without it these tests skip,
unless ``M2COFS_REQUIRE_CHROMIUM=1`` (set by ``.ci/run``), which turns the skip into a failure.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import make_case, write_nifti

from m2cofs.data.labels import CONVENTIONS
from m2cofs.evaluation import evaluate
from m2cofs.reporting.html import boxplots_png, fmt
from m2cofs.reporting.plots import distribution_png, style_caption
from m2cofs.previews import (
    REGION_COLOURS,
    region_colours,
    render_case_preview_png,
    save_case_preview,
    slice_centre,
    to_ras,
)

PNG_SIG = b"\x89PNG\r\n\x1a\n"


def decode_png(data: bytes) -> np.ndarray:
    import matplotlib.image as mpimg

    assert data[:8] == PNG_SIG
    return mpimg.imread(io.BytesIO(data), format="png")


# ----------------------------------------------------------------------------- previews
def phantom(shape=(40, 44, 24)):
    """Two sources (ellipsoid head + a bright blob), a label around the blob."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    head = (x ** 2 + y ** 2 + z ** 2) < 0.8
    blob = ((x - 0.3) ** 2 + (y - 0.2) ** 2 + z ** 2) < 0.05
    a = np.where(head, 100 + 20 * x, 0).astype(np.float32) + 200 * blob
    b = np.where(head, 50 - 10 * y, 0).astype(np.float32) + 80 * blob
    lab = np.zeros(shape, np.int16)
    lab[((x - 0.3) ** 2 + (y - 0.2) ** 2 + z ** 2) < 0.09] = 2
    lab[blob] = 4
    return {"t1ce": a, "flair": b}, lab


def test_preview_png(tmp_path):
    src, lab = phantom()
    aff = np.diag([-1.0, -1.0, 2.5, 1.0])   # LPS, anisotropic
    png = render_case_preview_png(src, np.mean(list(src.values()), axis=0), lab, "brats2017", gt=lab,
                                  title="phantom", affine=aff)
    img = decode_png(png)
    h, w = img.shape[:2]
    assert w > h > 200                     # 5 columns x 3 rows
    assert img[..., :3].std() > 0.1        # not blank
    # the overlay colours appear (ET yellow, WT green)
    rgb = (img[..., :3] * 255).astype(int)
    yellowish = (rgb[..., 0] > 180) & (rgb[..., 1] > 160) & (rgb[..., 2] < 120)
    greenish = (rgb[..., 1] > 140) & (rgb[..., 0] < 120) & (rgb[..., 2] < 120)
    assert yellowish.sum() > 20 and greenish.sum() > 20

    out = tmp_path / "sub" / "case_preview.png"
    save_case_preview(out, src, None, lab, CONVENTIONS["brats2017"], title="no fused volume", affine=aff)
    assert out.read_bytes()[:8] == PNG_SIG
    assert [p.name for p in out.parent.iterdir()] == ["case_preview.png"]   # no temporary file left
    # sources only, and fused only
    decode_png(render_case_preview_png(src, None, None, None))
    decode_png(render_case_preview_png({}, src["t1ce"], lab, "brats2017"))
    with pytest.raises(ValueError, match="one grid"):
        render_case_preview_png(src, src["t1ce"][:-1], None, None)


def test_to_ras_orientation_and_spacing():
    vol = np.zeros((6, 8, 4), np.float32)
    vol[0, 0, 0] = 1.0
    # LPS: voxel i grows towards the patient's left, so i = 0 is the rightmost column in RAS
    ras, sp = to_ras(vol, np.diag([-1.0, -1.0, 2.0, 1.0]))
    assert ras.shape == (6, 8, 4) and sp == (1.0, 1.0, 2.0)
    assert ras[5, 7, 0] == 1.0
    # permuted axes: voxel axes (i, j, k) point along world (z, x, y) with sizes (3, 1, 2) mm
    perm = np.array([[0, 1.0, 0, 0], [0, 0, 2.0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])
    ras, sp = to_ras(vol, perm)
    assert ras.shape == (8, 4, 6) and sp == (1.0, 2.0, 3.0)
    assert ras[0, 0, 0] == 1.0
    # no affine: unchanged, 1 mm voxels
    same, sp = to_ras(vol, None)
    assert same is vol and sp == (1.0, 1.0, 1.0)


def test_slice_centre():
    fg = np.zeros((10, 10, 10), bool)
    fg[2:8, 2:8, 2:8] = True
    assert slice_centre(None, fg) == (4, 4, 4)
    lab = np.zeros((10, 10, 10), np.int16)
    lab[6:8, 1:3, 5] = 1
    assert slice_centre(lab, fg) in {(6, 1, 5), (6, 2, 5), (7, 1, 5), (7, 2, 5)}
    ring = np.zeros((11, 11, 3), np.int16)   # a hollow label: the centroid is outside it
    ring[2:9, 2:9, 1] = 1
    ring[3:8, 3:8, 1] = 0
    c = slice_centre(ring, np.ones_like(ring, bool))
    assert ring[c] == 1


def test_region_colours_cover_every_convention():
    for name, conv in CONVENTIONS.items():
        cols = region_colours(conv)
        assert list(cols) == conv.region_names
        assert len(set(cols.values())) == len(cols)
    assert region_colours("brats2013")["ET"] == REGION_COLOURS["ET"]


def _box_pixels(png: bytes) -> int:
    """Pixels in the box plots' face colour (#dbe6f6)."""
    rgb = (decode_png(png)[..., :3] * 255).round().astype(int)
    return int((np.abs(rgb - np.array([0xdb, 0xe6, 0xf6])).max(axis=-1) <= 2).sum())


def test_boxplots_and_fmt():
    png = boxplots_png([("Dice", {"ET": [0.5, 0.7, float("nan")], "WT": [0.9]}, True),
                        ("HD95", {"ET": [], "WT": [3.0, 4.0]}, False)])
    assert decode_png(png).shape[0] > 100
    assert fmt(None) == "–" and fmt(float("nan")) == "NaN" and fmt(float("inf")) == "∞"
    # one format: three significant digits
    assert fmt(0.86028) == "0.860" and fmt(373.1287) == "373" and fmt(2) == "2" and fmt(0.0) == "0"
    assert fmt(2.5) == "2.50" and fmt(23.456) == "23.5" and fmt(0.75) == "0.750" and fmt(1234.5) == "1234"
    assert fmt(0.00012) == "1.20e-04" and fmt(999.7) == "1000"


def test_few_cases_are_dots_not_boxes():
    """Below five cases a box plot is drawn from too few values: dots (and a median line) only."""
    rng = np.random.default_rng(0)
    few = distribution_png([("Dice", {"ET": [0.5, 0.7, 0.6], "WT": [0.9, 0.8]}, True)])
    many = distribution_png([("Dice", {"ET": list(rng.uniform(0.4, 0.8, 8)), "WT": list(rng.uniform(0.7, 1, 6))},
                              True)])
    assert _box_pixels(few) == 0
    assert _box_pixels(many) > 200
    assert "no box plot" in style_caption([3, 2]) and "box: quartiles" in style_caption([8, 6])


def test_model_provenance_for_predict_json(tmp_path):
    """What m2cofs predict records about the model: path, file SHA-256, preset, training data and commit."""
    import torch

    from m2cofs.checkpoint import save_model_file, sha256_file
    from m2cofs.inference.provenance import model_provenance
    from m2cofs.reporting.provenance import provenance_from_predict

    run = tmp_path / "run"
    path = save_model_file(run / "unified.ckpt", {"w": torch.zeros(2)},
                           {"kind": "unified", "preset": "lite", "trained_on": ["a", "b", "c"]})
    (run / "run.json").write_text(json.dumps({"data": "/data/train", "cases": ["a", "b", "c"]}))
    meta = json.loads((run / "unified.ckpt.json").read_text())
    prov = model_provenance(path, meta)
    assert prov["model"] == str(path.resolve()) and prov["model_sha256"] == sha256_file(path)
    assert prov["preset"] == "lite" and prov["model_kind"] == "unified"
    assert prov["training_data"] == "/data/train" and prov["training_cases"] == 3
    assert prov["git_commit"] is None                      # the sidecar does not record one
    assert model_provenance(path, {**meta, "git_commit": "abc123"})["git_commit"] == "abc123"
    # a run.json of another training (other cases) is not taken for this model's
    (run / "run.json").write_text(json.dumps({"data": "/elsewhere", "cases": ["x"]}))
    assert model_provenance(path, meta)["training_data"] is None
    back = provenance_from_predict(json.loads(json.dumps(prov)), tmp_path / "predict.json")
    assert {k: back[k] for k in prov} == prov
    assert provenance_from_predict(None, tmp_path / "predict.json")["source"] is None


# ----------------------------------------------------------------------------- the report
@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A report of 3 synthetic cases: one with a fused volume and a segmentation, one with a
    fused volume only, one with a segmentation only (a penalised empty ET)."""
    tmp = tmp_path_factory.mktemp("report")
    data = tmp / "data"
    for i in range(3):
        make_case(data, f"case{i}", seed=i, affine=np.diag([-1.0, -1.0, 1.5, 1.0]))
    pred = tmp / "pred"
    import nibabel as nib

    for i in range(3):
        cid = f"case{i}"
        srcs = [np.asarray(nib.load(str(data / cid / f"{cid}_{m}.nii.gz")).dataobj) for m in ("t1ce", "flair")]
        lab_img = nib.load(str(data / cid / f"{cid}_seg.nii.gz"))
        lab = np.asarray(lab_img.dataobj)
        if i in (0, 1):
            write_nifti(pred / cid / f"{cid}_fused.nii.gz", np.mean(srcs, axis=0).astype(np.float32), lab_img.affine)
        if i in (0, 2):
            seg = np.roll(lab, 1, axis=0)
            if i == 2:
                seg[seg == 4] = 1
            write_nifti(pred / cid / f"{cid}_seg.nii.gz", seg.astype(np.uint8), lab_img.affine)
    (pred / "predict.json").write_text(json.dumps(PROVENANCE))
    out = tmp / "rep"
    evaluate(pred, data, out, metrics="Q_MI,SSIM,PSNR,Dice,HD95", progress=False)
    return out / "report.html"


PROVENANCE = {"model": "/runs/a/unified.ckpt", "model_sha256": "9f" * 32, "model_kind": "unified", "preset": "lite",
              "model_version": "0.1.0", "training_data": "/data/BraTS2021", "training_cases": 11,
              "git_commit": "0123abcd", "modalities": ["t1ce", "flair"], "cases": {}}


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class StrictParser(HTMLParser):
    """Every non-void element explicitly closed, properly nested; collects tags and attributes."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: dict[str, int] = {}
        self.imgs: list[dict] = []
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.decl = None

    def handle_decl(self, decl):
        self.decl = decl

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "img":
            self.imgs.append(a)
        if "href" in a:
            self.hrefs.append(a["href"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            self.errors.append(f"end tag for void element {tag}")
        elif not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> does not close <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


def test_report_is_valid_self_contained_html(report):
    text = report.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>\n")
    p = StrictParser()
    p.feed(text)
    p.close()
    assert p.decl == "DOCTYPE html"
    assert p.errors == [] and p.stack == []
    assert p.tags["html"] == p.tags["head"] == p.tags["body"] == p.tags["title"] == 1
    assert '<html lang="en">' in text and '<meta charset="utf-8">' in text
    assert len(p.ids) == len(set(p.ids))
    # every link is an in-page anchor to an existing id
    assert all(h.startswith("#") and h[1:] in p.ids for h in p.hrefs)
    # nothing fetched: no scripts, stylesheets, fonts, frames or remote URLs
    low = text.lower()
    for bad in ("http://", "https://", "<script", "<link", "@import", "url(", "<iframe", "<object", "src=\"//"):
        assert bad not in low, bad
    # images: the distributions (segmentation, paper's fusion metrics, others) + one preview and one tumour
    # panel per case (every case has a label)
    assert len(p.imgs) == 3 + 3 + 3
    for a in p.imgs:
        assert a["src"].startswith("data:image/png;base64,") and a.get("alt")
        img = decode_png(base64.b64decode(a["src"].split(",", 1)[1], validate=True))
        assert img.shape[0] > 50 and img[..., :3].std() > 0.02
    # tables: setup, provenance, summary (seg, paper's fusion, other fusion), volumes, per-case (seg; per mode
    # the paper's and the others), per case 1-2 small ones
    assert p.tags["table"] == 2 + 3 + 1 + (1 + 2 + 2) + (2 + 1 + 1)
    for needle in ("Dice/ET", "HD95/ET", "volume/Q_MI", "slice/SSIM", "volume/PSNR", "case0", "case1", "case2",
                   "†", "brats2017"):
        assert needle in text, needle


def test_report_lists_modes_and_notes(report):
    summary = json.loads((report.parent / "summary.json").read_text())
    text = report.read_text()
    assert summary["modes"] == ["volume", "slice"]
    assert "Fusion metrics, volume mode" in text and "Fusion metrics, slice mode" in text
    assert "Slice and volume values differ" in text
    for n in summary["notes"]:
        assert n.replace("'", "&#x27;") in text or n in text


def _section(text: str, sid: str) -> str:
    start = text.index(f'<h2 id="{sid}">')
    nxt = text.find("<h2 ", start + 5)
    return text[start: nxt if nxt > 0 else len(text)]


def test_report_provenance(report):
    """Which model: read from predict.json into summary.json and a Provenance section."""
    summary = json.loads((report.parent / "summary.json").read_text())
    prov = summary["provenance"]
    for k in ("model", "model_sha256", "preset", "training_data", "training_cases", "git_commit"):
        assert prov[k] == PROVENANCE[k], k
    sec = _section(report.read_text(), "provenance")
    for needle in ("/runs/a/unified.ckpt", "9f" * 32, "lite", "/data/BraTS2021", "11", "0123abcd",
                   "SHA-256 of the model file", "Training cases", "Git commit"):
        assert needle in sec, needle


def test_report_provenance_unknown(tmp_path):
    """No predict.json: the report says the model is not known instead of leaving it out."""
    from m2cofs.reporting.html import render_evaluation_report
    from m2cofs.reporting.provenance import provenance_from_predict

    summary = {"provenance": provenance_from_predict(None, tmp_path / "predict.json"), "metrics": {}}
    text = render_evaluation_report(summary, [], [], CONVENTIONS["brats2017"])
    sec = _section(text, "provenance")
    assert "the model is not known" in sec and "not recorded" in sec


def test_report_volumes_worst_first_and_paper_table(report):
    summary = json.loads((report.parent / "summary.json").read_text())
    text = report.read_text()
    vols = summary["volumes_ml"]
    # voxels of 1 x 1 x 1.5 mm; each label block is 3 x 4 x 4 voxels (conftest.make_case)
    block = 48 * 1.5 / 1000
    assert vols["case2"]["ET"]["pred"] == 0 and vols["case2"]["ET"]["true"] == pytest.approx(block)
    assert vols["case2"]["ET"]["flag"] is True and vols["case2"]["WT"]["flag"] is False
    assert vols["case0"]["WT"]["ratio"] == pytest.approx(1.0) and not vols["case0"]["WT"]["flag"]
    assert summary["volume_flags"] == ["case2 ET"]
    assert any("case2 ET" in n for n in summary["notes"])
    vsec = _section(text, "volumes")
    assert vsec.count("⚠") == 1 + 1               # the legend and case2's ET
    assert fmt(block) in vsec
    # worst first by mean Dice: case2 (ET missed) before case0, case1 (no segmentation) last
    assert summary["case_order"]["ids"] == ["case2", "case0", "case1"]
    per_case = _section(text, "per-case")
    assert per_case.index("case2") < per_case.index("case0") < per_case.index("case1")
    cases = _section(text, "cases")
    assert cases.index('id="case-case2"') < cases.index('id="case-case0"') < cases.index('id="case-case1"')
    # the paper's fusion metrics in their own summary table, the others in another
    summ = _section(text, "summary")
    paper_at, other_at = summ.index("the paper&#x27;s six metrics"), summ.index("Fusion: other metrics")
    paper_tab, other_tab = summ[paper_at:other_at], summ[other_at:]
    assert "volume/Q_MI" in paper_tab and "slice/Q_MI" in paper_tab and "SSIM" not in paper_tab
    assert "volume/SSIM" in other_tab and "volume/PSNR" in other_tab and "Q_MI" not in other_tab
    assert "inside the brain mask" in summ and "Slice and volume values differ" in summ


def test_limited_previews_show_the_worst_cases(report, tmp_path):
    """--max-previews 1: the one preview is of the worst case (case2), not of the first (case0)."""
    pred, data = report.parent.parent / "pred", report.parent.parent / "data"
    res = evaluate(pred, data, tmp_path / "rep", metrics="Q_MI,Dice", max_previews=1, progress=False)
    assert [r.id for r in res.results if r.preview] == ["case2"]
    assert res.results[0].values == evaluate(pred, data, tmp_path / "rep2", metrics="Q_MI,Dice", report=False,
                                             progress=False).results[0].values
    text = (tmp_path / "rep" / "report.html").read_text()
    assert text.count("<article") == 1 and 'id="case-case2"' in text
    assert any("the worst by mean Dice" in n for n in res.summary["notes"])


def test_report_one_number_format(report):
    """Every number in the tables has at most three significant digits (whole numbers from 1000 on)."""
    text = report.read_text()
    cells = re.findall(r"<td[^>]*>(.*?)</td>", text)
    numbers = re.findall(r"(?<![\w#/.-])-?\d+\.\d+(?:e[+-]\d+)?(?![\w.])", " ".join(cells))
    assert len(numbers) > 50
    for n in numbers:
        mant = n.lstrip("-").split("e")[0].replace(".", "").lstrip("0")
        assert len(mant) <= 3, n


def test_report_dots_below_five_cases(report):
    """Two or three cases per series: the figures are strip plots, without boxes."""
    text = report.read_text()
    figs = re.findall(r'<figure><img src="data:image/png;base64,([^"]+)" alt="([^"]*)"', text)
    dists = [(base64.b64decode(b), alt) for b, alt in figs if "across cases" in alt]
    assert len(dists) == 3
    for png, alt in dists:
        assert "no box plot" in alt
        assert _box_pixels(png) == 0


# ----------------------------------------------------------------------------- chromium
def chromium() -> str:
    exe = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if exe is None:
        msg = "headless chromium not found (apt-get install chromium)"
        if os.environ.get("M2COFS_REQUIRE_CHROMIUM") == "1":
            pytest.fail(msg + " (M2COFS_REQUIRE_CHROMIUM=1)")
        pytest.skip(msg)
    return exe


def run_chromium(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'chromium-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


PROBE = ('<script>window.addEventListener("load",function(){var p=document.createElement("pre");p.id="probe";'
         'p.textContent=JSON.stringify(Array.from(document.images).map(function(i){'
         'return [i.naturalWidth,i.naturalHeight,i.complete];}));document.body.appendChild(p);});</script>')


def test_report_renders_in_chromium(report, tmp_path):
    exe = chromium()
    # 1. the rendered DOM has every image decoded and every table
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    res = run_chromium(exe, tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    dom = res.stdout
    m = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert m, f"chromium produced no probe output (rc {res.returncode}): {res.stderr[-2000:]}"
    sizes = json.loads(m.group(1))
    assert len(sizes) == report.read_text().count("<img") >= 6
    assert all(w > 100 and h > 100 and done for w, h, done in sizes), sizes
    assert dom.count("<table") == report.read_text().count("<table") >= 8
    assert "Distributions across cases" in dom and "Provenance" in dom and "case2" in dom

    # 2. a screenshot of the page is not blank
    shot = tmp_path / "shot.png"
    res = run_chromium(exe, tmp_path, "--window-size=1400,6000", "--hide-scrollbars", f"--screenshot={shot}",
                       report.as_uri())
    assert shot.exists(), res.stderr[-2000:]
    img = decode_png(shot.read_bytes())
    assert img.shape[:2] == (6000, 1400)
    rgb = img[..., :3]
    non_white = (rgb < 0.9).any(axis=-1).mean()
    dark = (rgb < 0.2).all(axis=-1).mean()       # the black preview panels
    assert rgb.std() > 0.1 and non_white > 0.05 and dark > 0.01, (rgb.std(), non_white, dark)
