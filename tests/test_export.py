"""
Export: the whole model (subdivision included) as a torch.export program with dynamic batch, height
and width equals the eager model at sizes other than the traced one (also sizes that are not
multiples of the stride, and sizes at which N covers every cell of a step); tools/export_model.py
writes ONNX + the program of the trained demo model, runs them (onnxruntime) and agrees with the
eager model; what cannot be exported is refused with the key to change.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from detectron2.modeling import build_model

from conftest import DEMO_CONFIG, demo_config, randomize_norm_stats
import tool_process
from pointrend_seg.modeling.export import (
    ExportableSegmentor,
    ExportError,
    export_program,
    load_exported_program,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model(*opts):
    cfg = demo_config(*opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    randomize_norm_stats(model, torch.Generator().manual_seed(1))
    return model.eval()


def _eager(model, images):
    """The model's own output (forward on a list of dicts): (B, K, H, W)."""
    with torch.no_grad():
        return torch.stack([o["sem_seg"] for o in model([{"image": x} for x in images])])


def test_wrapper_is_the_models_whole_image_path_and_program_matches_at_other_sizes():
    model = _model()  # demo PointRend: N 1024, output stride 8, 5 classes
    g = torch.Generator().manual_seed(0)
    example = torch.rand(1, 3, 64, 96, generator=g) * 255
    wrapper = ExportableSegmentor(model)
    program = export_program(model, example, min_size=16, max_size=512).module()
    # 97x131 and 33x47: not multiples of 8; 24x24: every cell of each step is re-predicted
    # (N 1024 >= 48x48 cells); two images of one size in one batch
    for batch, (h, w) in [(1, (64, 96)), (1, (97, 131)), (1, (33, 47)), (1, (24, 24)),
                          (2, (72, 40))]:
        images = torch.rand(batch, 3, h, w, generator=g) * 255
        with torch.no_grad():
            ours = wrapper(images)
            exported = program(images)
        eager = _eager(model, list(images))
        assert ours.shape == exported.shape == (batch, 5, h, w)
        torch.testing.assert_close(ours, eager, atol=1e-5, rtol=0)
        # the exported graph: the same operations, re-ordered by the tracer at most
        torch.testing.assert_close(exported, eager, atol=1e-4, rtol=0)
        assert (exported.argmax(1) == eager.argmax(1)).float().mean() >= 0.999


def test_export_refuses_what_it_cannot_export():
    with pytest.raises(ExportError, match="TEST.SLIDING_WINDOW.ENABLED"):
        ExportableSegmentor(_model("TEST.SLIDING_WINDOW.ENABLED", "True",
                                   "TEST.SLIDING_WINDOW.SIZE", "(64, 64)",
                                   "TEST.SLIDING_WINDOW.STRIDE", "(32, 32)"))
    with pytest.raises(ExportError, match="TEST.AUG.ENABLED"):
        ExportableSegmentor(_model("TEST.AUG.ENABLED", "True"))
    with pytest.raises(ExportError, match="eval mode"):
        ExportableSegmentor(_model().train())
    with pytest.raises(ExportError, match="GeneralizedSemanticSegmentor"):
        ExportableSegmentor(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(ExportError, match=r"\(B, 3, H, W\)"):
        export_program(_model(), torch.zeros(3, 64, 64))
    with pytest.raises(ExportError, match="smaller than the minimum size 32"):
        export_program(_model(), torch.zeros(1, 3, 16, 64))


def test_export_tool_refuses_a_bad_size_with_one_line(tmp_path, random_weights):
    proc = tool_process.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "export_model.py"), "--config-file",
         DEMO_CONFIG, "--output", str(tmp_path), "--check-size", "12x34x5", "--weights",
         random_weights], timeout=300)
    assert proc.returncode == 2
    assert "export_model.py: error: --check-size takes HEIGHTxWIDTH" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_export_tool_on_the_trained_model_onnx_and_program_agree_with_eager(trained_demo_model,
                                                                           tmp_path):
    """
    The trained demo model exported to torch.export and (from that program) ONNX, run
    (onnxruntime) on two validation images at their size (128x128) and a random 97x131 image:
    the class of >= 99.9% of the pixels agrees with the eager model as loaded (batch norm is
    folded before export; folding moves logits by rounding only, and a subdivision point at an
    exact near-tie could move). Measured: 100.00% of the pixels, logits within 1e-5 of the eager
    model as exported.
    """
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from detectron2.data import DatasetCatalog

    cfg, _ = trained_demo_model
    weights = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    images = [d["file_name"] for d in DatasetCatalog.get("synthetic_shapes_sem_seg_val")[:2]]
    out = tmp_path / "exported"
    proc = tool_process.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "export_model.py"), "--config-file",
         DEMO_CONFIG, "--output", str(out), "--check-size", "97x131", "--check-image", images[0],
         "--check-image", images[1], "MODEL.WEIGHTS", weights], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # No exporter noise: the model (and its wrapper) in eval mode, onnx_ir's notes filtered.
    assert "training mode" not in proc.stderr and "Attribute type is ambiguous" not in proc.stderr
    report = json.loads((out / "export.json").read_text())
    assert report["classes"] == ["background", "blob", "ring", "stroke", "polygon"]
    assert report["batch_norm_folded"] is True
    checks = report["checks"]
    assert {(c["format"], c["input"]) for c in checks} == {
        (f, i) for f in ("onnx", "torch_export") for i in ["random 97x131"] + images}
    for c in checks:
        assert c["class_agreement"] >= 0.999, c
        assert c["max_abs_diff_vs_eager"] < 1e-3, c  # measured <= 1e-5
    assert os.path.getsize(out / "model.onnx") > 1e6  # weights inside (no external data file)
    # translated from the saved program, its symbolic axes still carry the names users bind
    import onnx

    graph = onnx.load(str(out / "model.onnx")).graph
    for value, channels in ((graph.input[0], 3), (graph.output[0], 5)):
        assert [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim] == [
            "batch", channels, "height", "width"]

    # the saved program loads (through the loader that refuses archives that would unpickle) and
    # runs without the tool, at yet another size, with autograd on (its parameters come back
    # requiring grad) and off
    program = load_exported_program(str(out / "model.pt2")).module()
    x = torch.rand(1, 3, 50, 70) * 255
    with_grad = program(x)
    with torch.no_grad():
        torch.testing.assert_close(program(x), with_grad.detach(), atol=0, rtol=0)


def test_export_tool_class_names_and_flags_after_the_overrides(tmp_path, prefix):
    """--classes / --register-folder as in the demo (export.json keeps the names of a folder
    dataset's model), and flags anywhere, even after the KEY VALUE overrides (before: "--classes"
    was swallowed by the overrides and "--output" reported missing)."""
    import export_model
    from PIL import Image

    from pointrend_seg.config import build_config

    args = export_model.parse_args(["--config-file", DEMO_CONFIG, "MODEL.WEIGHTS", "w.pth",
                                    "--classes", "a,b,c,d,e", "--output", str(tmp_path)])
    assert args.output == str(tmp_path) and args.opts == ["MODEL.WEIGHTS", "w.pth"]
    cfg = build_config(DEMO_CONFIG, ["DATASETS.TRAIN", "()", "DATASETS.TEST", "()"])
    assert export_model.class_names(cfg, args) == ["a", "b", "c", "d", "e"]
    images, masks = tmp_path / "img", tmp_path / "mask"
    images.mkdir(), masks.mkdir()
    Image.new("RGB", (8, 8)).save(images / "x.png")
    Image.new("L", (8, 8)).save(masks / "x.png")
    args = export_model.parse_args(
        ["--config-file", DEMO_CONFIG, "--output", str(tmp_path), "--register-folder",
         f"{prefix}_f", str(images), str(masks), "road,car,tree,sky,sea"])
    assert export_model.class_names(cfg, args) == ["road", "car", "tree", "sky", "sea"]


def _tiny_program(*args, **kwargs):
    """A small exported program in place of the model's (the test is about the files)."""
    return torch.export.export(torch.nn.Conv2d(3, 5, 1), (torch.rand(1, 3, 8, 8),))


def _earlier_export(out):
    """An earlier export's files in ``out``: {name: bytes}."""
    out.mkdir()
    files = {"model.onnx": b"earlier onnx", "model.pt2": b"earlier program",
             "export.json": b'{"earlier": true}'}
    for name, data in files.items():
        (out / name).write_bytes(data)
    return files


def test_export_that_fails_leaves_the_earlier_export_as_it_was(tmp_path, monkeypatch, capsys,
                                                              random_weights):
    """
    A re-export into a folder that holds an earlier one and fails half-way (here the ONNX step,
    after the program was written) changes none of the earlier files and leaves nothing else
    there. Before: model.pt2 was already replaced, beside the earlier model.onnx and export.json
    that describe another export.
    """
    import export_model

    def failing_onnx(model, example, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half an ONNX file")
        raise ImportError("No module named 'onnxscript'")

    monkeypatch.setattr(export_model, "export_program", _tiny_program)
    monkeypatch.setattr(export_model, "export_onnx", failing_onnx)
    out = tmp_path / "exported"
    earlier = _earlier_export(out)
    status = export_model.main(["--config-file", DEMO_CONFIG, "--output", str(out),
                                "--check-size", "64x64", "--no-check", "--weights",
                                random_weights])
    assert status == 2 and "ONNX export needs onnx and onnxscript" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier


def test_export_replaces_the_earlier_files_and_names_one_it_did_not_write(tmp_path, monkeypatch,
                                                                         caplog, random_weights):
    """A re-export replaces the files it writes, leaves no temporary files, and warns about an
    earlier export's file it did not replace (another --format). The staging folder a killed
    export left is removed (before: kept for ever); one of a live process is not."""
    import export_model

    monkeypatch.setattr(export_model, "export_program", _tiny_program)
    out = tmp_path / "exported"
    earlier = _earlier_export(out)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (out / f".export.tmp.{gone}.0123abcd").mkdir()
    (out / f".export.tmp.{gone}.0123abcd" / "model.onnx").write_bytes(b"half an ONNX file")
    (out / ".export.tmp.1.0123abcd").mkdir()  # pid 1 runs
    # the tool's logger may not propagate to caplog's root handler (Detectron2's setup_logger)
    monkeypatch.setattr(export_model.logger, "handlers", [caplog.handler])
    status = export_model.main(["--config-file", DEMO_CONFIG, "--output", str(out),
                                "--check-size", "64x64", "--no-check", "--format",
                                "torch_export", "--weights", random_weights])
    assert status == 0
    assert sorted(p.name for p in out.iterdir()) == [
        ".export.tmp.1.0123abcd", "export.json", "model.onnx", "model.pt2"]
    assert (out / "model.onnx").read_bytes() == earlier["model.onnx"]
    report = json.loads((out / "export.json").read_text())
    assert report["files"] == {"torch_export": str(out / "model.pt2")}
    program = load_exported_program(str(out / "model.pt2")).module()
    assert program(torch.rand(1, 3, 8, 8)).shape == (1, 5, 8, 8)
    assert "model.onnx is from an earlier export" in caplog.text


def _export(out, *args, weights=None):
    """tools/export_model.py (the program replaced by a tiny one, no check) as the command line
    runs it: (exit status, stderr lines)."""
    import export_model
    from pointrend_seg.engine.cli import run_tool

    argv = ["--config-file", DEMO_CONFIG, "--output", str(out), "--check-size", "64x64",
            "--no-check", "--format", "torch_export", *args]
    return run_tool(lambda: export_model.main(argv + (["--weights", weights] if weights else [])),
                    prog="export_model.py")


def test_export_refuses_a_model_without_weights(tmp_path, monkeypatch, capsys):
    """Before: a WARNING, then the randomly initialised model written, exit 0, "weights": ""."""
    import export_model

    monkeypatch.setattr(export_model, "export_program", _tiny_program)
    out = tmp_path / "exported"
    assert _export(out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("export_model.py: error: MODEL.WEIGHTS is empty: there are no "
                              "weights to load")
    assert "e.g. --run OUTPUT_DIR, --weights " in err[-1]
    assert "MODEL.WEIGHTS output/model_final.pth" in err[-1] and not out.exists()


def test_export_class_names_that_do_not_fit_are_an_error(tmp_path, monkeypatch, capsys, caplog,
                                                         random_weights, prefix):
    """--classes / --register-folder names that are not the model's 5 classes: one line, exit 2,
    nothing written (before: a warning and "classes": null, exit 0). Only with no names given
    and none known does export.json get "classes": null, with the warning."""
    import export_model

    monkeypatch.setattr(export_model, "export_program", _tiny_program)
    out = tmp_path / "exported"
    huge = tmp_path / "names.txt"
    huge.write_text("x\n" * (5 << 19))  # 5 MiB
    images, masks = tmp_path / "img", tmp_path / "mask"
    images.mkdir(), masks.mkdir()
    for given, message in [
            (["--classes", "a,b,c"], "has 3 class names but the model predicts "
                                     "MODEL.SEM_SEG_HEAD.NUM_CLASSES=5 classes"),
            (["--classes", str(huge)], f"class names file {huge} is larger than 4 MiB"),
            (["--register-folder", f"{prefix}_three", str(images), str(masks), "a,b,c"],
             f"dataset '{prefix}_three' has 3 class names")]:
        assert _export(out, *given, weights=random_weights) == 2, given
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("export_model.py: error: ") and message in err[-1], err
        assert not out.exists()
    # the fallback: nothing given, the config's datasets not registered -> a warning, no names
    # (the tool's logger may not propagate to caplog's root handler: Detectron2's setup_logger)
    monkeypatch.setattr(export_model.logger, "handlers", [caplog.handler])
    assert _export(out, "DATASETS.TRAIN", "()", "DATASETS.TEST", "()",
                   weights=random_weights) == 0
    assert json.loads((out / "export.json").read_text())["classes"] is None
    assert "export.json will have no class names" in caplog.text


class _FullDiskFile:
    """A file whose writes fail with ENOSPC (a full disk)."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        raise OSError(28, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("full", ["model.pt2", "export.json"])
def test_export_on_a_full_disk_is_one_line_and_the_earlier_export_stays(
        tmp_path, monkeypatch, capsys, random_weights, full):
    """
    The disk fills while the program (torch's zip writer) or export.json is written: one line,
    exit 1, the earlier export byte for byte, no staging folder. Before: writing model.pt2
    aborted the process in C++ (exit 134, "terminate called after throwing an instance of
    'c10::Error' ... unexpected pos"): the archive is now made in memory and written by Python.
    """
    import builtins

    import export_model
    import pointrend_seg.files

    def full_disk_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        return _FullDiskFile(f) if full in os.path.basename(path) and "r" not in mode else f

    monkeypatch.setattr(export_model, "export_program", _tiny_program)
    for module in (export_model, pointrend_seg.files):
        monkeypatch.setattr(module, "open", full_disk_open, raising=False)
    out = tmp_path / "exported"
    earlier = _earlier_export(out)
    assert _export(out, weights=random_weights) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"export_model.py: error: no space left on the device while writing the "
                       f"export into {out}: nothing of it was published, an earlier export there "
                       "is as it was; free some space and export again")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier


def test_export_refuses_an_output_that_is_a_file_before_loading(tmp_path, capsys,
                                                                random_weights):
    """Before: a FileExistsError traceback once the model was loaded."""
    afile = tmp_path / "afile"
    afile.write_text("precious")
    assert _export(afile, weights=random_weights) == 2
    assert _export(afile / "sub", weights=random_weights) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"export_model.py: error: --output {afile} is a file, not a folder; give another --output",
        f"export_model.py: error: --output {afile / 'sub'}: {afile} is a file, not a folder; "
        "give another --output"]
    assert afile.read_text() == "precious"
