"""The command line starts without torch or MONAI: ``--help``, ``--version``, argument errors and
``data check`` import neither (they took 4–8 s of imports here, and 22–29 s on a cold disk).

Checked in real processes with ``python -X importtime``, which lists every module imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "monai")


def imported_modules(*argv: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -X importtime -m m2cofs.cli *argv``; return the process and its imported modules."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "m2cofs.cli", *argv], capture_output=True,
                         text=True, env=env, timeout=300)
    mods = {ln.rsplit("|", 1)[1].strip() for ln in res.stderr.splitlines() if ln.startswith("import time:")}
    assert "m2cofs.errors" in mods, res.stderr[-2000:]  # -X importtime did report
    return res, mods


def heavy(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if m.split(".")[0] in HEAVY)


COMMANDS = ("synth", "data", "train", "predict", "evaluate", "demo", "compare", "models")


@pytest.mark.parametrize("argv", [
    ["--help"], ["--version"], *[[c, "--help"] for c in COMMANDS], ["data", "check", "--help"],
    ["predict"],  # required arguments missing
    ["models"], ["models", "--details", "brats-t1ce-flair"],
    ["train", "--data", "d", "--out", "r", "--preset", "nope"],  # a bad choice
    ["--bogus"],
])
def test_start_up_imports_neither_torch_nor_monai(argv):
    res, mods = imported_modules(*argv)
    assert res.returncode in (0, 2), res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert not heavy(mods), f"m2cofs {' '.join(argv)} imported {heavy(mods)[:5]}"


def test_data_check_imports_neither_torch_nor_monai(tiny_dataset):
    res, mods = imported_modules("data", "check", str(tiny_dataset))
    assert res.returncode == 0 and "all 3 case(s) usable" in res.stdout, res.stdout + res.stderr[-2000:]
    assert not heavy(mods), heavy(mods)[:5]


def test_torch_free_modules_keep_their_old_names():
    """``ModelConfig`` and the head names moved to ``m2cofs.models.spec``; the old imports still work
    and every registered head (also one registered later) is a valid ``model.seg_head``; the
    compare methods (groups, labels, ``--methods``) come without torch too."""
    code = (
        "import sys\n"
        "import m2cofs, m2cofs.config, m2cofs.models, m2cofs.data, m2cofs.data.labels, m2cofs.compare.methods\n"
        "from m2cofs.compare import GROUPS, CompareOptions, label, parse_methods\n"
        "from m2cofs.compare.methods import GROUPS as G2\n"
        "assert GROUPS is G2 and label('plugin_unet') == 'unet + M²-CoFS' and 'mean' in parse_methods('classical')\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'monai')], 'torch imported'\n"
        "from m2cofs.models import ModelConfig, M2CoFSNet, seg_head_names, register_seg_head\n"
        "from m2cofs.models.network import ModelConfig as C2\n"
        "from m2cofs.models.heads import _SEG_HEADS, seg_head_names as names2\n"
        "assert C2 is ModelConfig and names2 is seg_head_names\n"
        "assert sorted(_SEG_HEADS) == seg_head_names(), (sorted(_SEG_HEADS), seg_head_names())\n"
        "register_seg_head('mine')(lambda **kw: None)\n"
        "from m2cofs.config import load_config\n"
        "assert load_config('lite', overrides=['model.seg_head=mine']).model.seg_head == 'mine'\n"
        "from m2cofs.data import MultiModalDataset, PreprocessConfig, discover, CONVENTIONS\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


# ----------------------------------------------------------------------------- where the command is
@pytest.mark.skipif(not shutil.which("make"), reason="needs make")
@pytest.mark.parametrize("target", ["install", "install-dev", "demo"])
def test_make_says_where_the_command_is(tmp_path, target):
    """``make demo`` / ``make install`` end by naming ``.venv/bin/m2cofs`` and how to put it on PATH
    (it is not there after ``make``). Run against a stand-in venv whose install is up to date and
    whose ``m2cofs`` only echoes, so nothing is installed or trained."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name in ("python", "m2cofs"):
        exe = venv / "bin" / name
        exe.write_text("#!/bin/sh\necho \"stand-in $0 $*\"\n")
        exe.chmod(0o755)
    for stamp in (".installed", ".installed-dev"):
        (venv / stamp).touch()
    res = subprocess.run(["make", "-s", "-C", str(REPO), target, f"VENV={venv}", f"OUT={tmp_path / 'out'}"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert f"{venv}/bin/m2cofs" in last and f"source {venv}/bin/activate" in last, res.stdout
    if target == "demo":
        assert "stand-in" in res.stdout and "demo --out" in res.stdout  # the demo itself still runs


def test_readme_says_where_the_command_is():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    assert "source .venv/bin/activate" in text and ".venv/bin/m2cofs" in text
