"""Hostile inputs that used to get through silently or with a traceback (issue #34): model files
whose metadata cannot be proven, numeric edge cases in predictions, label conventions that
disagree, output folders that cannot be written, and the work an untrusted header may ask for.

Each test here failed before its fix. The data-level hostile files (float overflow, ``x.nii``
beside ``x.nii.gz``, zero pixdim, disagreeing qform/sform, affines 2e-3 mm apart) are builders in
``bad_inputs.py`` and run through ``data check`` (test_data_loading.py) and the four commands
(test_reliability.py's matrix)."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import make_case, write_nifti
from test_reliability import _predict, make_model, one_error_line, snapshot

from m2cofs.checkpoint import load_model_file, save_model_file, save_tensors, sha256_file, sidecar_path
from m2cofs.cli import main
from m2cofs.config import load_config  # noqa: F401
from m2cofs.errors import M2CofsError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model") / "unified.ckpt")


def _copy_model(model, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, dst)
    shutil.copy(sidecar_path(model), sidecar_path(dst))
    return dst


# ----------------------------------------------------------------------------- model metadata
def test_weights_without_embedded_metadata_beside_a_lying_sidecar_are_refused(tmp_path, capsys, model):
    """Weights re-saved without their metadata, a sidecar that swaps the modalities and carries
    the right checksum: nothing proves the sidecar, so the model is refused."""
    m = _copy_model(model, tmp_path / "m" / "unified.ckpt")
    tensors, meta = load_model_file(m)
    save_tensors(m, tensors)  # no metadata
    meta["modalities"] = ["flair", "t1ce"]
    meta["sha256"] = sha256_file(m)
    sidecar_path(m).write_text(json.dumps(meta))
    data = tmp_path / "data"
    make_case(data, "a")
    assert _predict(m, data, tmp_path / "out") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "carries no embedded metadata" in line and "unified.ckpt" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("field,value", [("label_convention", "msd"), ("preprocessing", {"spacing": [3.0, 3.0, 3.0]})])
def test_sidecar_that_lies_about_convention_or_spacing_is_refused(tmp_path, capsys, model, field, value):
    m = _copy_model(model, tmp_path / "m" / "unified.ckpt")
    meta = json.loads(sidecar_path(m).read_text())
    meta[field] = value if field != "preprocessing" else {**meta["preprocessing"], **value}
    sidecar_path(m).write_text(json.dumps(meta))  # checksum still right: the weights did not change
    data = tmp_path / "data"
    make_case(data, "a")
    assert _predict(m, data, tmp_path / "out") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "does not match" in line and field in line


def test_a_sidecar_asking_for_a_huge_network_does_not_get_it_built(tmp_path, capsys, model, monkeypatch):
    """A sidecar (with its embedded copy) asking for 512 channels: refused once the parameters
    registered pass twice the weights' size, before they are initialised (not 2.65 GB later)."""
    m = _copy_model(model, tmp_path / "m" / "unified.ckpt")
    tensors, meta = load_model_file(m)
    meta["config"]["model"].update(feature_channels=512, embed_dim=384, num_heads=[8])
    save_model_file(m, tensors, {k: v for k, v in meta.items() if k not in ("sha256", "format", "version")})
    registered = []
    real = torch.nn.Module.register_parameter

    def recording(self, name, param):
        registered.append(0 if param is None else param.numel() * param.element_size())
        return real(self, name, param)

    monkeypatch.setattr(torch.nn.Module, "register_parameter", recording)
    data = tmp_path / "data"
    make_case(data, "a")
    assert _predict(m, data, tmp_path / "out") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "far larger than its weights" in line and "unified.ckpt" in line
    weights = sum(t.numel() * t.element_size() for t in tensors.values())
    assert sum(registered) <= 2 * weights + (64 << 20) + max(registered), sum(registered)


def test_unknown_label_convention_in_a_sidecar_is_one_line(tmp_path, capsys, model):
    m = _copy_model(model, tmp_path / "m" / "unified.ckpt")
    tensors, meta = load_model_file(m)
    meta["label_convention"] = "brats2099"
    save_model_file(m, tensors, {k: v for k, v in meta.items() if k not in ("sha256", "format", "version")})
    data = tmp_path / "data"
    make_case(data, "a")
    assert _predict(m, data, tmp_path / "out") == 2
    assert "unknown label_convention 'brats2099'" in one_error_line(capsys.readouterr().err)


def test_bundled_model_still_loads_with_its_embedded_metadata():
    from m2cofs.bundled import resolve_model

    path, _ = resolve_model(None)
    tensors, meta = load_model_file(path)  # embedded copy present and equal to the sidecar
    assert meta["modalities"] and len(tensors) > 10


# ----------------------------------------------------------------------------- evaluate
def _gt_and_pred(tmp_path, seg, info=None, dtype=None):
    data = tmp_path / "data"
    make_case(data, "a", label_values=(0, 1, 2, 3))
    pred = tmp_path / "pred"
    (pred / "a").mkdir(parents=True)
    gt = np.asarray(nib.load(str(data / "a" / "a_seg.nii.gz")).dataobj)
    img = nib.Nifti1Image(seg(gt).astype(dtype or np.uint8), np.eye(4), dtype=dtype)
    nib.save(img, str(pred / "a" / "a_seg.nii.gz"))
    if info is not None:
        (pred / "predict.json").write_text(json.dumps(info))
    return data, pred


def _evaluate(data, pred, out, *extra):
    return main(["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(out), "--quiet", "--no-report",
                 "--labels", "brats2023", "--mode", "volume", "--metrics", "Dice", *extra])


def test_int64_labels_do_not_wrap_in_evaluate(tmp_path, capsys):
    """2**32 + {1, 2, 3}: refused as labels outside the convention, not cast to {1, 2, 3} first."""
    data, pred = _gt_and_pred(tmp_path, lambda gt: np.where(gt > 0, gt.astype(np.int64) + 2**32, 0), dtype=np.int64)
    assert _evaluate(data, pred, tmp_path / "rep") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "4294967297" in line and "a_seg.nii.gz" in line
    assert not (tmp_path / "rep").exists()


def test_evaluate_reads_the_convention_the_prediction_records(tmp_path, capsys):
    """The ground truth in brats2023 values, the prediction the same regions in msd values (1 and
    2 swapped), predict.json saying msd: every region scores Dice 1."""
    swap = lambda gt: np.choose(gt.astype(int), [0, 2, 1, 3])  # noqa: E731
    data, pred = _gt_and_pred(tmp_path, swap, {"label_convention": "msd", "cases": {"a": {}}})
    assert _evaluate(data, pred, tmp_path / "rep") == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    dice = {k: v["mean"] for k, v in summary["metrics"].items() if k.startswith("Dice/")}
    assert dice and all(v == pytest.approx(1.0) for v in dice.values()), dice


def test_evaluate_refuses_a_recorded_convention_with_other_regions(tmp_path, capsys):
    data, pred = _gt_and_pred(tmp_path, lambda gt: gt, {"label_convention": "mrbrains"})
    assert _evaluate(data, pred, tmp_path / "rep") == 2
    assert "cannot be compared" in one_error_line(capsys.readouterr().err)


@pytest.fixture
def read_only_folder(tmp_path):
    """A read-only tmpfs (root writes through chmod; skipped where it cannot be mounted)."""
    import os
    import subprocess

    mnt = tmp_path / "ro"
    mnt.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_read_only_report_folder_is_one_line_before_any_metric(tmp_path, capsys, read_only_folder, monkeypatch):
    from m2cofs.evaluation import scoring

    data, pred = _gt_and_pred(tmp_path, lambda gt: gt)
    monkeypatch.setattr(scoring, "evaluate_case", lambda job: pytest.fail("a metric was computed"))
    assert _evaluate(data, pred, read_only_folder / "rep") == 2
    assert "not writable" in one_error_line(capsys.readouterr().err)


def test_read_only_prediction_folder_is_one_line(tmp_path, capsys, model, read_only_folder):
    data = tmp_path / "data"
    make_case(data, "a")
    assert _predict(model, data, read_only_folder / "out") == 2
    assert "cannot write to the output folder" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_out_naming_a_dangling_symlink_is_one_line(tmp_path, capsys, model, command):
    data, pred = _gt_and_pred(tmp_path, lambda gt: gt)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    code = _predict(model, data, link) if command == "predict" else _evaluate(data, pred, link)
    assert code == 2
    assert "which does not exist" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "nowhere").exists()


def test_a_guide_gain_out_of_range_is_refused_before_anything_is_read(tmp_path, capsys, model):
    data = tmp_path / "data"
    make_case(data, "a")
    assert _predict(model, data, tmp_path / "out", "--fusion-guide", "TC", "--fusion-guide-gain", "9") == 2
    assert "--fusion-guide-gain must be in [0, 4], not 9" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_a_case_whose_id_is_predict_json_is_refused(tmp_path, capsys, model):
    data = tmp_path / "data"
    make_case(data, "predict.json")
    assert _predict(model, data, tmp_path / "out") == 2
    assert "collide with predict.json" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- predict's output folder
def test_overwrite_replaces_only_our_files(tmp_path, capsys, model):
    data = tmp_path / "data"
    make_case(data, "a")
    out = tmp_path / "out"
    assert _predict(model, data, out) == 0
    (out / "a" / "notes.txt").write_text("my notes\n")
    shutil.copy(data / "a" / "a_seg.nii.gz", out / "a" / "ground_truth.nii.gz")
    (out / "a" / "a_preview.png").write_bytes(b"an old preview")  # ours, not written by a --no-preview run: goes
    assert _predict(model, data, out, "--overwrite") == 0
    assert sorted(p.name for p in (out / "a").iterdir()) == ["a_fused.nii.gz", "a_seg.nii.gz", "ground_truth.nii.gz",
                                                               "notes.txt"]
    assert (out / "a" / "notes.txt").read_text() == "my notes\n"


def test_a_failing_run_removes_only_its_own_work(tmp_path, capsys, model, monkeypatch):
    """Run B writes case b into OUT while run A (which created OUT) is still predicting; A then
    fails: B's case and predict.json stay."""
    from m2cofs import inference

    data = tmp_path / "data"
    for cid in ("a", "b", "c"):
        make_case(data, cid, seed=ord(cid))
    out = tmp_path / "out"
    real = inference.predict_case

    def b_runs_meanwhile(model_, case, *a, **k):
        if case.id == "c":
            monkeypatch.setattr(inference, "predict_case", real)
            assert _predict(model, data, out, "--ids", "b") == 0  # run B, inside run A
            raise M2CofsError("simulated failure", case.id)
        return real(model_, case, *a, **k)

    monkeypatch.setattr(inference, "predict_case", b_runs_meanwhile)
    assert _predict(model, data, out, "--ids", "a,c") == 2
    err = capsys.readouterr().err  # (two nested progress bars: not one line)
    assert "m2cofs: error:" in err and "simulated failure" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["b", "predict.json"]
    assert list(json.loads((out / "predict.json").read_text())["cases"]) == ["b"]


def test_same_case_written_meanwhile_is_not_replaced_silently(tmp_path, capsys, model, monkeypatch):
    from m2cofs import inference

    data = tmp_path / "data"
    make_case(data, "a")
    out = tmp_path / "out"
    real = inference.predict_case
    state = {}

    def other_run_first(model_, case, *a, **k):
        monkeypatch.setattr(inference, "predict_case", real)
        assert _predict(model, data, out, "--labels", "brats2023") == 0  # run B writes case a first
        state["b"] = [e for e in snapshot(out) if not e[0].startswith(".predict-partial-")]  # A's own staging
        return real(model_, case, *a, **k)

    monkeypatch.setattr(inference, "predict_case", other_run_first)
    assert _predict(model, data, out) == 2
    err = capsys.readouterr().err
    assert "another run wrote outputs for a" in err and "Traceback" not in err
    assert snapshot(out) == state["b"]


def test_predict_json_keeps_every_run_s_cases(tmp_path, capsys, model):
    data = tmp_path / "data"
    make_case(data, "a")
    make_case(data, "b", seed=1)
    out = tmp_path / "out"
    assert _predict(model, data, out, "--ids", "a", "--labels", "brats2023") == 0
    assert _predict(model, data, out, "--ids", "b") == 0
    cases = json.loads((out / "predict.json").read_text())["cases"]
    assert sorted(cases) == ["a", "b"]
    assert cases["a"]["label_convention"] == "brats2023" and cases["b"]["label_convention"] == "brats2017"


def test_stale_staging_of_a_dead_run_is_removed_even_when_its_pid_is_reused(tmp_path, capsys, model):
    import os

    data = tmp_path / "data"
    make_case(data, "a")
    out = tmp_path / "out"
    stale = out / f".predict-partial-{os.getpid()}-abc"  # a live pid (ours), but no run holds it
    (stale / "a").mkdir(parents=True)
    assert _predict(model, data, out) == 0
    assert not stale.exists()


# ----------------------------------------------------------------------------- work and checks up front
def test_bad_file_in_the_last_case_stops_the_run_before_the_first_prediction(tmp_path, capsys, model, monkeypatch):
    from m2cofs import inference

    data = tmp_path / "data"
    make_case(data, "a")
    folder = make_case(data, "b", seed=1)
    v = np.ones((20, 22, 18), np.float32)
    v[1, 1, 1] = np.nan
    write_nifti(folder / "b_flair.nii.gz", v)
    monkeypatch.setattr(inference, "predict_case", lambda *a, **k: pytest.fail("predicted before checking"))
    assert _predict(model, data, tmp_path / "out") == 2
    assert "NaN/Inf" in one_error_line(capsys.readouterr().err)


def test_untrusted_voxel_size_cannot_ask_for_unbounded_work(tmp_path, capsys, model, monkeypatch):
    """5 mm voxels on a model whose grid is 1 mm: refused before any work, with the estimate;
    --max-voxels raises the limit."""
    from m2cofs import inference

    m = _copy_model(model, tmp_path / "m" / "unified.ckpt")
    tensors, meta = load_model_file(m)
    meta["preprocessing"]["spacing"] = [1.0, 1.0, 1.0]
    save_model_file(m, tensors, {k: v for k, v in meta.items() if k not in ("sha256", "format", "version")})
    data = tmp_path / "data"
    make_case(data, "a", shape=(40, 40, 40), affine=np.diag([5.0, 5.0, 5.0, 1.0]))
    monkeypatch.setattr(inference, "predict_case", lambda *a, **k: pytest.fail("work started"))
    assert _predict(m, data, tmp_path / "out", "--max-voxels", "1000000") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "200x200x200 = 8 M voxels on the model grid" in line and "--max-voxels" in line


# ----------------------------------------------------------------------------- concurrency stress
def test_concurrent_runs_into_one_folder_keep_every_finished_case(tmp_path, model):
    """Six runs into one OUT at once (threads: each its own staging folder and locks, as separate
    processes have), over the same and different cases, with and without --overwrite, beside the
    staging folder of a killed run: every run that finished has its cases in OUT, bit-identical to
    a run alone, predict.json lists every case, no staging folder is left. A run that lost a race
    for a case without --overwrite fails with its one-line error and leaves nothing."""
    import subprocess
    import sys
    import threading

    from m2cofs.inference import Predictor, load_model

    data = tmp_path / "data"
    for i, cid in enumerate("abcd"):
        make_case(data, cid, seed=i)
    loaded = load_model(model)
    ref = tmp_path / "ref"
    Predictor(loaded, device="cpu", log=None, progress=False).predict_folder(data, ref, preview=False)
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = out / f".predict-partial-{dead.pid}-killed"  # what a SIGKILLed run leaves
    (killed / "a").mkdir(parents=True)
    (killed / "a" / "a_seg.nii.gz").write_bytes(b"half a file")
    runs = [("a,b", False), ("c", False), ("a,b", True), ("d", False), ("c,d", True), ("b", False)]
    results: dict[int, object] = {}

    def run(i, ids, overwrite):
        try:
            Predictor(loaded, device="cpu", log=None, progress=False).predict_folder(
                data, out, ids=ids.split(","), overwrite=overwrite, preview=False)
            results[i] = "ok"
        except M2CofsError as exc:
            results[i] = str(exc)

    threads = [threading.Thread(target=run, args=(i, ids, ow)) for i, (ids, ow) in enumerate(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == len(runs)
    finished = {cid for i, (ids, _) in enumerate(runs) if results[i] == "ok" for cid in ids.split(",")}
    for i, r in results.items():
        assert r == "ok" or "--overwrite" in r, r
    assert results[2] == "ok" and results[4] == "ok"  # with --overwrite nothing can refuse them
    record = json.loads((out / "predict.json").read_text())
    assert finished <= set(record["cases"])
    for cid in "abcd":
        if cid in finished:
            for kind in ("fused", "seg"):
                got = np.asarray(nib.load(str(out / cid / f"{cid}_{kind}.nii.gz")).dataobj)
                want = np.asarray(nib.load(str(ref / cid / f"{cid}_{kind}.nii.gz")).dataobj)
                assert np.array_equal(got, want), (cid, kind)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
