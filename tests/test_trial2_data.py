"""
Hostile-input trial 2 (issue 24), data and demo inputs: each input the trial found is made here
(small), and the test fails on the behaviour it found.

1. Inputs are never outputs: ``demo.py --input DIR --output DIR`` overwrote the photos;
   ``--save-masks`` into a dataset root overwrote its ground-truth masks. Refused, exit 2, before
   the model is built; every input byte-for-byte unchanged.
2. A truncated video (header 600 frames, about half readable) gave a shorter output and exit 0:
   now a warning with frames read against the header, a line in the summary, exit 1.
3. Video frames obey the images' pixel limit (refused from the header) and ``--max-side`` (the
   model sees the reduced frame, masks keep the frame's size).
4. Degenerate images (3000x3, 2x2000) passed the dataset check and killed training at iteration 0
   ("height and width must be > 0", no file named): the check names them ("degenerate image"),
   ``--skip-bad`` leaves them out, the mapper names the file.
5. A parent folder given as the images folder: one error naming the subfolder to give (was a
   25-line traceback).
6. A full disk while writing evaluation outputs left 0-byte files: now whole or nothing, and one
   error naming the file.
7. ``.gif`` photos in an input or dataset folder were left out silently: they are read (first
   frame); other files are counted in a warning.
8. A mask path that is a folder: one problem naming it ("is a folder, not a file").
9. Demo errors: one line ``demo.py: error: ...``, exit status 2 (was 1, without the prefix).
"""
import contextlib
import errno
import gc
import importlib.util
import io
import json
import logging
import os
import sys
from contextlib import redirect_stderr

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from pointrend_seg.data import BadInputError, SemSegDatasetMapper, check_dataset, read_image_file
from pointrend_seg.data import GroundTruthReader, read_label_file
from pointrend_seg.data.dataset_check import DatasetCheckError, mapper_resizes
from pointrend_seg.data.datasets import register_folder_dataset
from pointrend_seg.engine import media
from pointrend_seg.engine.cli import run_tool
from pointrend_seg.engine.media import MediaSource, VideoReader, expand_inputs
from pointrend_seg.evaluation import ResultWriteError, SegmentationEvaluator, write_result_file
from pointrend_seg import files as files_module
from pointrend_seg.evaluation import report as report_module

from bad_dataset import disc_sample
from conftest import DEMO_CONFIG, REPO_ROOT, demo_config
import tool_process

import demo

TOOLS = os.path.join(REPO_ROOT, "tools")
VAL = "synthetic_shapes_sem_seg_val"


# ---- helpers -----------------------------------------------------------------------------------
class _FakePredictor:
    """Stands in for the model (these tests are about files): vertical bands of class ids; the
    shapes of the frames it was given are recorded."""

    def __init__(self, num_classes):
        self.num_classes = num_classes
        self.shapes = []

    def predict_labels(self, image_bgr):
        self.shapes.append(image_bgr.shape)
        return _bands(image_bgr.shape[0], image_bgr.shape[1], self.num_classes)


def _bands(height, width, num_classes):
    ids = np.arange(width) * num_classes // width
    return np.broadcast_to(ids, (height, width)).astype(np.uint8)


@pytest.fixture
def fake_model(monkeypatch):
    """tools/demo.py with a fake predictor; ``fake_model.built`` lists those it built."""
    built = []

    def build(cfg, **kwargs):
        built.append(_FakePredictor(cfg.settings.MODEL.SEM_SEG_HEAD.NUM_CLASSES))
        return built[-1]

    monkeypatch.setattr(demo, "build_predictor", build)
    return built


@pytest.fixture
def no_model(monkeypatch):
    """tools/demo.py must stop before it builds a model."""
    def build(cfg, **kwargs):
        raise AssertionError("the model was built before the error")

    monkeypatch.setattr(demo, "build_predictor", build)


@pytest.fixture
def logged():
    """The pointrend_seg log records of WARNING and above (its logger does not propagate once
    Detectron2's setup_logger ran, so caplog would miss them)."""
    records = []

    class _Handler(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = _Handler(logging.WARNING)
    logger = logging.getLogger("pointrend_seg")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def _forget(name):
    for catalog in (DatasetCatalog, MetadataCatalog):
        if name in catalog.list():
            catalog.remove(name)


@contextlib.contextmanager
def _live_log_streams():
    """Log handlers that Detectron2's setup_logger (cached) bound to the stdout of an earlier
    test (closed since) write to this one's while in the block: else each record is a
    "--- Logging error ---" traceback on stderr."""
    stale = [h for name in ("pointrend_seg", "detectron2", "fvcore")
             for h in logging.getLogger(name).handlers
             if type(h) is logging.StreamHandler and getattr(h.stream, "closed", False)]
    for handler in stale:
        handler.stream = sys.stdout  # not setStream(): it flushes the closed stream
    try:
        yield
    finally:
        for handler in stale:
            handler.stream = sys.__stdout__


def _demo(capsys, *argv, weights="w.pth"):
    """(exit status, stderr) of tools/demo.py run in this process as the tool runs it (a
    dataset of its --register-folder is registered anew)."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "--register-folder":
            _forget(argv[i + 1])
    capsys.readouterr()
    argv = ["--config-file", DEMO_CONFIG, *argv] + (["MODEL.WEIGHTS", weights] if weights else [])
    with _live_log_streams():
        status = run_tool(lambda: demo.main(argv), prog="demo.py")
    return status, capsys.readouterr().err


def _one_error_line(err, prog="demo.py"):
    """The message of stderr that must be exactly one line ``PROG: error: MESSAGE``."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0][len(f"{prog}: error: "):]


def _tool_process(name, *args, timeout=300):
    """A tool run as a process: (exit status, stderr lines without the import warnings)."""
    proc = tool_process.tool(name, *args, timeout=timeout)
    lines = [line for line in proc.stderr.splitlines()
             if line.strip() and "warn" not in line.lower()]
    return proc.returncode, lines


def _check_dataset_tool(argv):
    """(exit status, stderr) of tools/check_dataset.py's main run in this process."""
    spec = importlib.util.spec_from_file_location("check_dataset_tool",
                                                  os.path.join(TOOLS, "check_dataset.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    stderr = io.StringIO()
    with redirect_stderr(stderr), _live_log_streams():
        status = run_tool(lambda: tool.main(argv), prog="check_dataset.py")
    return status, stderr.getvalue()


def _photo(path, size=(40, 32), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return str(path)


def _contents(folder):
    """{relative path: bytes} of every file under ``folder``."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def _video(path, num_frames, size=(64, 48), fourcc="MJPG", fps=25):
    """A video of ``num_frames`` frames of ``size`` (W, H); AVI/MJPG by default: its header
    (frame count) comes first, so a cut file still opens, as the trial's did."""
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened()
    for i in range(num_frames):
        frame = np.full((height, width, 3), (40, 90 + i % 100, 200), np.uint8)
        frame[:, : 1 + i % width] = 230
        writer.write(frame)
    writer.release()
    return str(path)


def _frames(path):
    """(frames readable, (width, height)) of a video file."""
    capture = cv2.VideoCapture(str(path))
    count, size = 0, (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                      int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    while capture.read()[0]:
        count += 1
    capture.release()
    return count, size


def _folder_dataset(root, stems=("a", "b", "c"), size=64, images="images", masks="masks"):
    """ROOT/images/STEM.png and ROOT/masks/STEM.png (2 classes: a disc on a background)."""
    image_dir, mask_dir = os.path.join(root, images), os.path.join(root, masks)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(mask_dir, exist_ok=True)
    for i, stem in enumerate(stems):
        image, label = disc_sample(np.random.default_rng(i), size)
        Image.fromarray(image).save(os.path.join(image_dir, f"{stem}.png"))
        Image.fromarray(label).save(os.path.join(mask_dir, f"{stem}.png"))
    return image_dir, mask_dir


# ---- 1. inputs are never outputs ---------------------------------------------------------------
def test_demo_refuses_to_write_over_its_input_photos(tmp_path, capsys, no_model):
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "a.png")
    _photo(photos / "b.jpg", seed=1)
    before = _contents(photos)
    # before: a.png was replaced by its picture (b.jpg's picture is b.png, beside it)
    status, err = _demo(capsys, "--input", str(photos), "--output", str(photos))
    assert status == 2
    message = _one_error_line(err)
    assert message.startswith(f"{photos / 'a.png'} is the input: writing it would replace")
    assert "choose another output" in message
    # through a link to the folder, and one file given itself
    (tmp_path / "link").symlink_to(photos)
    for argv in (["--input", str(photos), "--output", str(tmp_path / "link")],
                 ["--input", str(photos / "a.png"), "--output", str(photos), "--show-points"]):
        status, err = _demo(capsys, *argv)
        assert status == 2 and "is the input" in _one_error_line(err), err
    # a video given with its own folder as the output (OUTPUT/STEM.mp4 is the input)
    clip = _video(photos / "clip.mp4", 3, fourcc="mp4v")
    before[os.path.basename(clip)] = open(clip, "rb").read()
    status, err = _demo(capsys, "--input", clip, "--output", str(photos))
    assert status == 2 and f"{clip} is the input:" in _one_error_line(err)
    assert _contents(photos) == before  # byte for byte, nothing added


def test_demo_refuses_a_dataset_folder_as_output(tmp_path, capsys, no_model, prefix):
    root = tmp_path / "data"
    images, masks = _folder_dataset(str(root))
    before = _contents(root)
    name = f"{prefix}_ds"
    register = ["--register-folder", name, images, masks, "background,disc",
                "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2"]
    # before: --save-masks wrote ROOT/masks/STEM.png over the ground truth
    status, err = _demo(capsys, "--dataset", name, "--save-masks", "--output", str(root),
                        *register)
    assert status == 2
    message = _one_error_line(err)
    assert f"{root / 'masks' / 'a.png'}" in message and "replace" in message
    # the mask folder or the image folder as the output, also without --dataset
    # the mask folder or the image folder as the output (their files are the inputs) ...
    for folder in (masks, images):
        status, err = _demo(capsys, "--dataset", name, "--output", folder, *register)
        assert status == 2, err
        assert f"{os.path.join(folder, 'a.png')} is the input" in _one_error_line(err)
    # ... also when no file would be replaced: no outputs inside a registered dataset's folders
    _photo(tmp_path / "x.png")
    for argv, folder in [(["--output", masks], masks), (["--output", images], images),
                         (["--save-masks", "--output", str(root)], masks)]:
        status, err = _demo(capsys, "--input", str(tmp_path / "x.png"), *argv, *register)
        assert status == 2, err
        message = _one_error_line(err)
        assert f"is the {'mask' if folder == masks else 'image'} folder of dataset {name!r} " \
               f"({folder})" in message, message
    assert _contents(root) == before


def test_demo_into_a_new_folder_beside_the_inputs_still_works(tmp_path, capsys, fake_model,
                                                             prefix):
    root = tmp_path / "data"
    images, masks = _folder_dataset(str(root))
    before = _contents(root)
    name = f"{prefix}_ds"
    status, err = _demo(capsys, "--dataset", name, "--save-masks", "--output",
                        str(root / "demo"), "--register-folder", name, images, masks,
                        "background,disc", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2")
    assert status == 0, err
    assert sorted(os.listdir(root / "demo" / "masks")) == ["a.png", "b.png", "c.png"]
    np.testing.assert_array_equal(read_label_file(root / "demo" / "masks" / "a.png"),
                                  _bands(64, 64, 2))
    assert {k: v for k, v in _contents(root).items() if not k.startswith("demo")} == before
    # a photo folder and its outputs beside it (OUTPUT/a.png is not an input: b.jpg -> b.png)
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "b.jpg")
    status, err = _demo(capsys, "--input", str(photos), "--output", str(photos))
    assert status == 0, err
    assert sorted(os.listdir(photos)) == ["b.jpg", "b.png"]


# ---- 2. a truncated video ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def truncated_video(tmp_path_factory):
    """(path, frames readable): the trial's case, a 600-frame video of which about half is
    left (64x48 here)."""
    folder = tmp_path_factory.mktemp("video")
    whole = _video(folder / "whole.avi", 600)
    data = open(whole, "rb").read()
    path = folder / "cut.avi"
    path.write_bytes(data[: len(data) // 2])
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened() and capture.get(cv2.CAP_PROP_FRAME_COUNT) == 600
    capture.release()
    readable, _ = _frames(path)
    assert 100 < readable < 500, readable
    return str(path), readable, whole


@pytest.fixture
def cheap_drawing(monkeypatch):
    """Video frames written as they are (drawing 900 frames costs a minute; not tested here)."""
    monkeypatch.setattr(demo, "draw_sem_seg_figure",
                        lambda image, *args, **kwargs: np.ascontiguousarray(image))


def test_truncated_video_is_reported_against_its_header(tmp_path, capsys, fake_model, logged,
                                                        truncated_video, cheap_drawing):
    path, readable, whole = truncated_video
    out = tmp_path / "out"
    # before: a shorter output and exit 0, without a word
    status, err = _demo(capsys, "--input", path, "--output", str(out))
    assert status == 1, err
    reason = (f"only {readable} of the 600 frames that its header announces could be read: the "
              "file is truncated or damaged")
    assert f"demo.py: 1 of 1 input(s) failed" in err
    assert f"  {path}: {reason}; {out / 'cut.mp4'} holds the {readable} frames read" in err
    assert any(reason in record and path in record for record in logged), logged
    assert _frames(out / "cut.mp4")[0] == readable  # written as far as it goes
    # no false alarm: the whole file, and the cut one stopped by --max-frames
    status, err = _demo(capsys, "--input", whole, "--output", str(tmp_path / "whole"))
    assert status == 0 and "announces" not in err, err
    assert _frames(tmp_path / "whole" / "whole.mp4")[0] == 600
    status, err = _demo(capsys, "--input", path, "--output", str(tmp_path / "ten"),
                        "--max-frames", "10")
    assert status == 0 and "announces" not in err, err


def test_video_reader_counts_frames_against_the_header(truncated_video):
    path, readable, whole = truncated_video
    with VideoReader(MediaSource("video", path)) as reader:
        assert reader.num_frames == 600
        assert sum(1 for _ in reader) == readable == reader.frames_read
        assert f"only {readable} of the 600 frames" in reader.missing_frames()
    with VideoReader(MediaSource("video", whole)) as reader:
        assert sum(1 for _ in reader) == 600 and reader.missing_frames() is None


# ---- 3. video frames: pixel limit and --max-side ------------------------------------------------
def test_video_over_the_pixel_limit_is_refused_from_its_header(tmp_path, capsys, fake_model):
    clip = _video(tmp_path / "clip.avi", 4)  # 64x48 = 3072 pixels
    # before: video frames had no limit (an 8000x6000 video: 8 GB)
    with pytest.raises(BadInputError) as e:
        VideoReader(MediaSource("video", clip), max_pixels=3071)
    assert e.value.kind == "video too large" and e.value.path == clip
    with VideoReader(MediaSource("video", clip), max_pixels=3072) as reader:  # at the limit
        assert reader.size == (64, 48)
    out = tmp_path / "out"
    status, err = _demo(capsys, "--input", clip, "--output", str(out), "--max-image-pixels",
                        "3000")
    assert status == 2
    assert _one_error_line(err).startswith(
        f"video file {clip} is 64x48 (WxH) = 0.0 megapixels, over the limit of 0.003 megapixels")
    assert fake_model[0].shapes == [] and not os.path.exists(out / "clip.mp4")
    # among other inputs: skipped and listed, the others written
    photo = _photo(tmp_path / "p.png")
    status, err = _demo(capsys, "--input", photo, clip, "--output", str(out),
                        "--max-image-pixels", "3000")
    assert status == 1
    assert f"  {clip}: video file {clip} is 64x48 (WxH)" in err
    assert sorted(os.listdir(out)) == ["p.png"]


def test_large_video_frames_are_reduced_like_pictures(tmp_path, capsys, fake_model):
    clip = _video(tmp_path / "clip.avi", 5)  # 64x48
    out = tmp_path / "out"
    status, err = _demo(capsys, "--input", clip, "--output", str(out), "--max-side", "32",
                        "--save-masks")
    assert status == 0, err
    # the model saw the reduced frames, the video is written at that size ...
    assert fake_model[0].shapes == [(24, 32, 3)] * 5
    assert _frames(out / "clip.mp4") == (5, (32, 24))
    # ... and the masks keep the frame's size: the reduced frame's class ids, nearest
    names = sorted(os.listdir(out / "masks" / "clip"))
    assert names == [f"{i:06d}.png" for i in range(5)]
    expected = np.repeat(np.repeat(_bands(24, 32, 5), 2, axis=0), 2, axis=1)
    for name in names:
        np.testing.assert_array_equal(read_label_file(out / "masks" / "clip" / name), expected)
    # not reduced when it fits
    status, err = _demo(capsys, "--input", clip, "--output", str(tmp_path / "full"))
    assert status == 0 and fake_model[1].shapes == [(48, 64, 3)] * 5
    assert _frames(tmp_path / "full" / "clip.mp4") == (5, (64, 48))
    assert gc.get_freeze_count() == 0  # the demo's per-frame collection left nothing frozen


def test_video_reader_reduces_frames_and_bounds_decoder_threads(tmp_path, monkeypatch):
    clip = _video(tmp_path / "clip.mp4", 3, fourcc="mp4v")
    with VideoReader(MediaSource("video", clip), max_side=32) as reader:
        assert reader.size == (64, 48) and reader.frame_size == (32, 24)
        assert [f.shape for f in reader] == [(24, 32, 3)] * 3
    # FFmpeg keeps frames per decoder thread (one per core): large frames get fewer threads
    monkeypatch.setattr(media, "MAX_DECODER_PIXELS", 64 * 48)
    with VideoReader(MediaSource("video", clip)) as reader:
        if reader._capture.getBackendName() == "FFMPEG":
            assert reader._capture.get(cv2.CAP_PROP_N_THREADS) == 1
        assert sum(1 for _ in reader) == 3


# ---- 4. degenerate images ----------------------------------------------------------------------
# The demo config's resizes (short side 128, long side at most 128) bring both to a 0-pixel side.
DEGENERATE = {"thin": (3000, 3), "tall": (2, 2000)}  # (W, H)


def _with_degenerate_images(root):
    images, masks = _folder_dataset(root, stems=[f"ok{i}" for i in range(4)])
    for stem, (width, height) in DEGENERATE.items():
        Image.new("RGB", (width, height), (200, 30, 30)).save(os.path.join(images, f"{stem}.png"))
        Image.new("L", (width, height), 1).save(os.path.join(masks, f"{stem}.png"))
    return images, masks


def _degenerate_cfg(name, tmp_path, *opts):
    return demo_config(
        "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()", "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
        "2", "DATASETS.CHECK.CACHE_DIR", str(tmp_path / "cache"), "OUTPUT_DIR",
        str(tmp_path / "run"), "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2",
        "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "1000", "DATALOADER.NUM_WORKERS",
        "0", "DATASETS.CHECK.NUM_WORKERS", "1", *opts)


def test_dataset_check_names_degenerate_images(tmp_path, prefix):
    images, masks = _with_degenerate_images(str(tmp_path))
    name = register_folder_dataset(f"{prefix}_thin", images, masks, "background,disc")
    # before: passed the check
    report = check_dataset(name, cache_dir=str(tmp_path / "cache"), progress=False,
                           num_workers=1, resizes=mapper_resizes(demo_config()))
    found = {os.path.basename(p.file): p for p in report.problems}
    assert sorted(found) == ["tall.png", "thin.png"]
    assert all(p.kind == "degenerate image" for p in found.values())
    assert "is 3000x3 (WxH)" in found["thin.png"].message
    assert "is 2x2000 (WxH)" in found["tall.png"].message
    assert os.path.join(images, "thin.png") in found["thin.png"].message
    # the dataset's own images are fine with any resize; without resizes nothing is tested
    report = check_dataset(name, cache_dir=str(tmp_path / "cache"), progress=False,
                           num_workers=1)
    assert report.problems == []
    # tools/check_dataset.py with the run's config names them and exits 1
    config = tmp_path / "run.yaml"
    config.write_text(_degenerate_cfg(name, tmp_path).dump())
    status, err = _check_dataset_tool(["--config-file", str(config), "--no-cache"])
    assert status == 1, err


def test_degenerate_images_stop_the_run_named_or_are_left_out(tmp_path, prefix):
    from pointrend_seg.engine import Trainer
    from pointrend_seg.engine.run import prepare_run

    images, masks = _with_degenerate_images(str(tmp_path))
    name = register_folder_dataset(f"{prefix}_thin", images, masks, "background,disc")
    thin, tall = (os.path.join(images, f"{stem}.png") for stem in ("thin", "tall"))
    # tools/train_net.py's start-of-run check: one error naming both
    with pytest.raises(DatasetCheckError) as e:
        prepare_run(_degenerate_cfg(name, tmp_path))
    assert "degenerate image" in str(e.value)
    assert "thin.png" in str(e.value) and "tall.png" in str(e.value)
    # --skip-bad: left out, and training runs (before: PIL's "height and width must be > 0" at
    # iteration 0, whatever --skip-bad)
    cfg = _degenerate_cfg(name, tmp_path, "DATASETS.CHECK.SKIP_BAD", "True")
    plan = prepare_run(cfg)
    assert plan.skipped == {thin, tall}
    skipped = json.load(open(tmp_path / "run" / "skipped_samples.json"))
    assert sorted((s["kind"], s["file"]) for s in skipped) == [
        ("degenerate image", tall), ("degenerate image", thin)]
    torch.manual_seed(0)
    trainer = Trainer(cfg, plan)
    trainer.train()
    assert os.path.exists(tmp_path / "run" / "model_final.pth")


def test_mapper_names_a_degenerate_image(tmp_path):
    # the check off (or the file changed since): the mapper names the file
    image = tmp_path / "thin.png"
    Image.new("RGB", (3000, 3)).save(image)
    for is_train in (True, False):
        mapper = SemSegDatasetMapper(demo_config(), is_train)
        with pytest.raises(BadInputError) as e:
            mapper({"file_name": str(image)})
        assert e.value.kind == "degenerate image" and e.value.path == str(image)
        assert "3000x3 (WxH)" in str(e.value)
    # one pixel is enough: a 128x1 image resized by the test mapper is 128x1
    ok = tmp_path / "ok.png"
    Image.new("RGB", (128, 1)).save(ok)
    assert tuple(SemSegDatasetMapper(demo_config(), False)({"file_name": str(ok)})["image"]
                 .shape) == (3, 1, 128)


# ---- 5. a parent folder as the images folder ---------------------------------------------------
def test_parent_folder_as_images_folder_is_one_clear_error(tmp_path, capsys, prefix, no_model):
    root = tmp_path / "data"
    images, masks = _folder_dataset(str(root))
    name = register_folder_dataset(f"{prefix}_parent", str(root), masks, "background,disc")
    # before: ValueError "... is empty", a 25-line traceback in the tools
    with pytest.raises(BadInputError) as e:
        DatasetCatalog.get(name)
    message = str(e.value)
    assert message.startswith(f"dataset {name!r} is empty: no images with extension")
    assert f"it holds the folder(s) images, masks: give the folder of the images itself, e.g. " \
           f"{images}" in message
    assert "\n" not in message
    # the tools: one line, exit 2
    tool_name = f"{prefix}_tool"
    status, err = _check_dataset_tool(["--register-folder", tool_name, str(root), masks,
                                       "background,disc", tool_name, "--no-cache"])
    assert status == 2 and f"e.g. {images}" in _one_error_line(err, "check_dataset.py"), err
    status, err = _demo(capsys, "--dataset", f"{prefix}_demo", "--output", str(tmp_path / "o"),
                        "--register-folder", f"{prefix}_demo", str(root), masks,
                        "background,disc", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2")
    assert status == 2 and f"e.g. {images}" in _one_error_line(err), err
    # the demo given the parent folder of photos: the same hint
    status, err = _demo(capsys, "--input", str(root), "--output", str(tmp_path / "o"))
    assert status == 2
    message = _one_error_line(err)
    assert message.startswith(f"no images or videos in folder {root}")
    assert f"e.g. {images}" in message


def test_train_net_with_a_parent_folder_is_one_line(tmp_path):
    root = tmp_path / "data"
    _, masks = _folder_dataset(str(root))
    status, lines = _tool_process(
        "train_net.py", "--config-file", DEMO_CONFIG, "--register-folder", "parent", str(root),
        masks, "background,disc", "DATASETS.TRAIN", "('parent',)", "DATASETS.TEST", "()",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2", "OUTPUT_DIR", str(tmp_path / "run"),
        "DATASETS.CHECK.CACHE_DIR", str(tmp_path / "cache"))
    assert status == 2, lines
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("train_net.py: error: dataset 'parent' is "
                                                     "empty"), lines
    assert f"e.g. {root / 'images'}" in errors[0]
    assert not any("Traceback" in line for line in lines)


# ---- 6. a full disk while writing evaluation outputs -------------------------------------------
class _FullDisk:
    """``open`` for :mod:`pointrend_seg.evaluation.report` on a disk with ``free`` bytes left:
    a write past them writes what fits, then raises ENOSPC as the OS does."""

    def __init__(self, free=0):
        self.free = free
        self.opened = []

    def __call__(self, path, mode="r", **kwargs):
        f = open(path, mode, **kwargs)
        self.opened.append(path)
        disk = self

        class _File:
            def write(self, data):
                if len(data) > disk.free:
                    f.write(data[: disk.free])
                    f.flush()
                    disk.free = 0
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                disk.free -= len(data)
                return f.write(data)

            def __getattr__(self, attr):
                return getattr(f, attr)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

        return _File()


@pytest.mark.parametrize("free", [0, 10])
def test_full_disk_leaves_no_partial_result_file(tmp_path, monkeypatch, free):
    path = tmp_path / "eval_results.json"
    disk = _FullDisk(free)
    monkeypatch.setattr(files_module, "open", disk, raising=False)
    with pytest.raises(ResultWriteError) as e:
        write_result_file(str(path), lambda f: json.dump({"mIoU": 50.0, "x": list(range(100))}, f))
    assert e.value.errno == errno.ENOSPC
    assert str(e.value).startswith(f"no space left on the device while writing {path}")
    assert "\n" not in str(e.value)
    assert os.listdir(tmp_path) == [] and disk.opened  # neither the file nor a temporary one
    # an earlier result keeps its content
    path.write_text('{"mIoU": 1.0}')
    disk.free = free
    with pytest.raises(ResultWriteError):
        write_result_file(str(path), lambda f: json.dump({"mIoU": 50.0, "x": list(range(100))},
                                                         f))
    assert os.listdir(tmp_path) == ["eval_results.json"]
    assert path.read_text() == '{"mIoU": 1.0}'
    # other errors pass as they are, and leave nothing either
    monkeypatch.setattr(files_module, "open", open, raising=False)
    with pytest.raises(ZeroDivisionError):
        write_result_file(str(tmp_path / "other.json"), lambda f: 1 / 0)
    assert os.listdir(tmp_path) == ["eval_results.json"]


def test_full_disk_during_evaluation_is_one_line_and_no_empty_files(tmp_path, monkeypatch, prefix,
                                                                    capsys):
    images, masks = _folder_dataset(str(tmp_path / "data"), stems=("a", "b"), size=16)
    name = register_folder_dataset(f"{prefix}_eval", images, masks, "background,disc")
    out = tmp_path / "inference"

    def evaluate():
        evaluator = SegmentationEvaluator(name, distributed=False, output_dir=str(out))
        evaluator.reset()
        for record in DatasetCatalog.get(name):
            label = torch.as_tensor(read_label_file(record["sem_seg_file_name"]).astype(np.int64))
            scores = torch.nn.functional.one_hot(label, 2).permute(2, 0, 1).float()
            evaluator.process([{"file_name": record["file_name"]}], [{"sem_seg": scores}])
        return evaluator.evaluate()

    # a disk that fills during each of the evaluator's files in turn
    full = ["sem_seg_predictions.json", "sem_seg_evaluation.pth", "confusion_matrix.csv",
            "confusion_matrix.png"]
    for i, filename in enumerate(full):
        disk = _FullDisk()
        real_write = write_result_file

        def write(path, *args, _filename=filename, **kwargs):
            full_now = os.path.basename(path) == _filename
            monkeypatch.setattr(files_module, "open", disk if full_now else open,
                                raising=False)
            return real_write(path, *args, **kwargs)

        monkeypatch.setattr(report_module, "write_result_file", write)
        monkeypatch.setattr("pointrend_seg.evaluation.sem_seg.write_result_file", write)
        with pytest.raises(ResultWriteError) as e:
            evaluate()
        assert str(e.value).startswith(
            f"no space left on the device while writing {out / filename}")
        # the files before it are whole, none is empty, none half-written is left
        assert sorted(os.listdir(out)) == sorted(full[:i]), (filename, os.listdir(out))
        assert all(os.path.getsize(out / f) > 0 for f in os.listdir(out))
    monkeypatch.setattr(files_module, "open", open, raising=False)
    monkeypatch.setattr(report_module, "write_result_file", real_write)
    monkeypatch.setattr("pointrend_seg.evaluation.sem_seg.write_result_file", real_write)
    assert evaluate()["sem_seg"]["mIoU"] == pytest.approx(100.0)
    assert sorted(os.listdir(out)) == sorted(full)
    assert json.load(open(out / "sem_seg_predictions.json"))  # whole and readable
    # the tools: one line, exit 1 (a run that stopped)
    def stopped():
        raise ResultWriteError(f"no space left on the device while writing {out / 'x.json'}")

    capsys.readouterr()
    assert run_tool(stopped, prog="train_net.py") == 1
    assert capsys.readouterr().err == (
        f"train_net.py: error: no space left on the device while writing {out / 'x.json'}\n")


# ---- 7. GIF photos -----------------------------------------------------------------------------
def _gif(path, size=(40, 32)):
    """A GIF of four exact colours (a palette keeps them), and its RGB pixels."""
    width, height = size
    rgb = np.zeros((height, width, 3), np.uint8)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (250, 250, 250)]
    for i, colour in enumerate(colours):
        rgb[:, i * width // 4:(i + 1) * width // 4] = colour
    Image.fromarray(rgb).save(path)
    return str(path), rgb


def test_gif_photos_are_read_in_folder_datasets(tmp_path, prefix, logged):
    images, masks = _folder_dataset(str(tmp_path), stems=("a",), size=32)
    gif, rgb = _gif(os.path.join(images, "g.gif"), (32, 32))
    Image.new("L", (32, 32), 1).save(os.path.join(masks, "g.png"))
    for other in ("notes.txt", "h.heic"):
        open(os.path.join(images, other), "wb").write(b"x")
    name = register_folder_dataset(f"{prefix}_gif", images, masks, "background,disc")
    # before: g.gif was not in the dataset, without a word
    assert sorted(os.path.basename(d["file_name"]) for d in DatasetCatalog.get(name)) == [
        "a.png", "g.gif"]
    np.testing.assert_array_equal(read_image_file(gif, "RGB"), rgb)
    # the files that are left out are counted
    assert any(f"2 file(s) in {images} are left out" in r and ".heic x1, .txt x1" in r
               for r in logged), logged
    report = check_dataset(name, cache_dir=str(tmp_path / "cache"), progress=False,
                           num_workers=1)
    assert report.problems == [] and report.num_samples == 2


def test_gif_photos_are_read_by_the_demo(tmp_path, capsys, fake_model, logged):
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "a.png")
    _gif(photos / "g.gif")
    (photos / "h.heic").write_bytes(b"x")
    assert [s.kind for s in expand_inputs([str(photos)])] == ["image", "image"]
    out = tmp_path / "out"
    status, err = _demo(capsys, "--input", str(photos), "--output", str(out), "--save-masks")
    assert status == 0, err
    assert sorted(os.listdir(out)) == ["a.png", "g.png", "masks"]
    assert read_label_file(out / "masks" / "g.png").shape == (32, 40)
    assert any(f"1 file(s) of folder {photos} are left out" in r and ".heic x1" in r
               for r in logged), logged


# ---- 8. a mask that is a folder ----------------------------------------------------------------
def test_mask_that_is_a_folder_is_named(tmp_path, prefix):
    images, masks = _folder_dataset(str(tmp_path), stems=("a", "b"), size=32)
    os.remove(os.path.join(masks, "b.png"))
    os.mkdir(os.path.join(masks, "b.png"))
    folder = os.path.join(masks, "b.png")
    name = register_folder_dataset(f"{prefix}_dir", images, masks, "background,disc")
    report = check_dataset(name, cache_dir=str(tmp_path / "cache"), progress=False,
                           num_workers=1)
    # before: "cannot read label file ...: IsADirectoryError: [Errno 21] Is a directory"
    assert [(p.kind, p.file) for p in report.problems] == [("unreadable label", folder)]
    assert report.problems[0].message == f"label file {folder} is a folder, not a file"
    assert report.bad_images == [os.path.join(images, "b.png")]
    # where the check does not run: the mapper and the evaluation's reader say the same
    record = [d for d in DatasetCatalog.get(name) if d["file_name"].endswith("b.png")][0]
    mapper = SemSegDatasetMapper(demo_config("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2"), True)
    with pytest.raises(BadInputError, match=f"^label file {folder} is a folder, not a file$"):
        mapper(dict(record))
    with pytest.raises(BadInputError, match="is a folder, not a file"):
        GroundTruthReader(name)(record["file_name"])


# ---- 9. demo errors: one line, exit 2 ----------------------------------------------------------
@pytest.mark.parametrize("argv, weights, expected", [
    (["--dataset", "no_such_dataset"], "w.pth", "dataset 'no_such_dataset' is not registered"),
    (["--dataset", VAL, "--input", "x.png"], "w.pth", "give either --input"),
    ([], "w.pth", "give either --input"),
    (["--dataset", VAL], "", "MODEL.WEIGHTS is empty"),
    (["--input", "nope.png"], "w.pth", "input not found: nope.png"),
])
def test_demo_errors_are_one_line_with_status_2(tmp_path, capsys, no_model, argv, weights,
                                                expected):
    # before: exit 1, the message without "demo.py: error:"
    status, err = _demo(capsys, *argv, "--output", str(tmp_path / "o"), weights=weights)
    assert status == 2
    assert expected in _one_error_line(err)
    assert not os.path.exists(tmp_path / "o")


def test_demo_unusable_only_input_is_one_line_with_status_2(tmp_path, capsys, fake_model):
    # the only input a webcam that cannot be opened, or a video OpenCV cannot read
    status, err = _demo(capsys, "--input", "7", "--output", str(tmp_path / "o"))
    assert status == 2 and "OpenCV cannot open webcam 7" in _one_error_line(err)
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"RIFF not a video")
    status, err = _demo(capsys, "--input", str(broken), "--output", str(tmp_path / "o"))
    assert status == 2 and str(broken) in _one_error_line(err)


def test_demo_process_exits_2_with_the_prefix(tmp_path):
    status, lines = _tool_process("demo.py", "--config-file", DEMO_CONFIG, "--dataset",
                                  "no_such_dataset", "--output", str(tmp_path / "o"),
                                  "MODEL.WEIGHTS", "w.pth")
    assert status == 2
    assert lines == ["demo.py: error: dataset 'no_such_dataset' is not registered"]
