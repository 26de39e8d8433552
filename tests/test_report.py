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
from m2cofs.reporting.previews import (
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


def test_boxplots_and_fmt():
    png = boxplots_png([("Dice", {"ET": [0.5, 0.7, float("nan")], "WT": [0.9]}, True),
                        ("HD95", {"ET": [], "WT": [3.0, 4.0]}, False)])
    assert decode_png(png).shape[0] > 100
    assert fmt(None) == "–" and fmt(float("nan")) == "NaN" and fmt(float("inf")) == "∞"
    assert fmt(0.86028) == "0.8603" and fmt(373.1287) == "373.1" and fmt(2) == "2" and fmt(0.0) == "0"


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
    out = tmp / "rep"
    evaluate(pred, data, out, metrics="Q_MI,SSIM,PSNR,Dice,HD95", progress=False)
    return out / "report.html"


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
    # images: the box plots (2) + one preview per case, all PNG data URIs that decode
    assert len(p.imgs) == 2 + 3
    for a in p.imgs:
        assert a["src"].startswith("data:image/png;base64,") and a.get("alt")
        img = decode_png(base64.b64decode(a["src"].split(",", 1)[1], validate=True))
        assert img.shape[0] > 50 and img[..., :3].std() > 0.02
    # tables: setup, summary, 3 per-case tables (seg, volume, slice), per case 1-2 small ones
    assert p.tags["table"] == 2 + 3 + (2 + 1 + 1)
    for needle in ("Dice/ET", "HD95/ET", "volume/Q_MI", "slice/SSIM", "volume/PSNR", "case0", "case1", "case2",
                   "†", "brats2017"):
        assert needle in text, needle


def test_report_lists_modes_and_notes(report):
    summary = json.loads((report.parent / "summary.json").read_text())
    text = report.read_text()
    assert summary["modes"] == ["volume", "slice"]
    assert "Fusion metrics, volume mode" in text and "Fusion metrics, slice mode" in text
    for n in summary["notes"]:
        assert n.replace("'", "&#x27;") in text or n in text


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
    assert len(sizes) == 5
    assert all(w > 100 and h > 100 and done for w, h, done in sizes), sizes
    assert dom.count("<table") == report.read_text().count("<table") >= 8
    assert "Box plots across cases" in dom and "case2" in dom

    # 2. a screenshot of the page is not blank
    shot = tmp_path / "shot.png"
    res = run_chromium(exe, tmp_path, "--window-size=1400,3000", "--hide-scrollbars", f"--screenshot={shot}",
                       report.as_uri())
    assert shot.exists(), res.stderr[-2000:]
    img = decode_png(shot.read_bytes())
    assert img.shape[:2] == (3000, 1400)
    rgb = img[..., :3]
    non_white = (rgb < 0.9).any(axis=-1).mean()
    dark = (rgb < 0.2).all(axis=-1).mean()       # the black preview panels
    assert rgb.std() > 0.1 and non_white > 0.05 and dark > 0.01, (rgb.std(), non_white, dark)
