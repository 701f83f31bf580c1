"""
A hostile-input audit of tools/demo.py's outputs: each finding made here (small), and the test
fails on the behaviour it found.

1. A full disk while writing a video: OpenCV's writer reports nothing; a video without its index
   (``moov`` atom) was logged "wrote", exit 0, and had replaced the earlier video of that name.
   Now the video is written under a temporary name, read back (as many frames as written) and
   only then renamed onto the target; else a failed input naming the file, exit 1, the earlier
   video kept.
2. Ctrl-C during a video file ended that video as if it were a webcam's stream (the earlier
   40-frame video replaced by 4 frames) and the run went on, exit 0. Now it stops the demo
   (exit 130, one line), the earlier video kept; for a webcam it is still how the stream ends.
3. A video was written through a link of the output folder (OUT/clip.mp4 -> a file elsewhere):
   the link is replaced now, as for pictures.
4. ``--show-points`` with a.png and a_points.png: one picture silently replaced the other;
   every output name is compared now, not the stems only.
5. Integer flags were not checked (``--max-frames -1``: a 0-frame video, "wrote", exit 0).
6. ``--output`` that is a file: a FileExistsError traceback.
7. Ctrl-C printed an empty message ("demo.py: ").
"""
import io
import os
import sys
from contextlib import redirect_stderr

import cv2
import numpy as np
import pytest

from pointrend_seg.engine import media
from pointrend_seg.engine.cli import run_tool
from pointrend_seg.engine.media import VideoReader, VideoWriteError, VideoWriter

from conftest import DEMO_CONFIG, REPO_ROOT
import tool_process
from test_trial2_data import (  # noqa: F401  (fixtures)
    _FakePredictor,
    _demo,
    _folder_dataset,
    _frames,
    _one_error_line,
    _photo,
    _video,
    fake_model,
    no_model,
)

import demo

DEAD_PID = 2 ** 22 + 1  # above Linux's largest pid: a process that no longer runs


def _interrupting_model(monkeypatch, after):
    """tools/demo.py with a fake predictor that raises KeyboardInterrupt (Ctrl-C) on its call
    number ``after + 1``."""
    class Interrupting(_FakePredictor):
        def predict_labels(self, image_bgr):
            if len(self.shapes) == after:
                raise KeyboardInterrupt
            return super().predict_labels(image_bgr)

    monkeypatch.setattr(demo, "build_predictor", lambda cfg, **kwargs: Interrupting(
        cfg.settings.MODEL.SEM_SEG_HEAD.NUM_CLASSES))


def _earlier_video(out, name="clip.mp4", num_frames=7):
    """An earlier run's OUT/NAME (bytes returned)."""
    out.mkdir(exist_ok=True)
    _video(out / name, num_frames, size=(32, 24), fourcc="mp4v")
    return (out / name).read_bytes()


# ---- 1. a full disk while writing a video --------------------------------------------------------
class _FullDiskWriter:
    """cv2.VideoWriter on a disk that fills up: no error anywhere, and the file ends before its
    index (``lost="index"``), or frames after the second are lost (``lost="frames"``)."""

    real = cv2.VideoWriter

    def __init__(self, lost, path, *args):
        self.lost, self.path, self.written = lost, path, 0
        self._writer = self.real(path, *args)

    def isOpened(self):
        return self._writer.isOpened()

    def write(self, frame):
        self.written += 1
        if self.lost != "frames" or self.written <= 2:
            self._writer.write(frame)

    def release(self):
        self._writer.release()
        if self.lost == "index" and os.path.exists(self.path):
            with open(self.path, "r+b") as f:
                f.truncate(os.path.getsize(self.path) // 2)


@pytest.mark.parametrize("lost, found", [
    ("index", "does not open"), ("frames", "holds 2 of the 5 frames written")])
def test_video_replaces_the_earlier_one_only_when_read_back_whole(
        tmp_path, capsys, fake_model, monkeypatch, lost, found):
    clip = _video(tmp_path / "clip.avi", 5)
    out = tmp_path / "out"
    earlier = _earlier_video(out)
    monkeypatch.setattr(cv2, "VideoWriter", lambda *args: _FullDiskWriter(lost, *args))
    # before: "wrote OUT/clip.mp4", exit 0, the earlier video replaced by a file without moov
    status, err = _demo(capsys, "--input", clip, "--output", str(out))
    assert status == 1, err
    assert "demo.py: 1 of 1 input(s) failed" in err
    assert (f"  {clip}: the video written for {out / 'clip.mp4'} {found}, read back: a full disk "
            f"or a failed write; {out / 'clip.mp4'} not written (the earlier file is kept)") in err
    assert (out / "clip.mp4").read_bytes() == earlier
    assert os.listdir(out) == ["clip.mp4"]  # no temporary file left
    # among other inputs: listed, the others written
    photo = _photo(tmp_path / "p.png")
    status, err = _demo(capsys, "--input", photo, clip, "--output", str(out))
    assert status == 1 and "demo.py: 1 of 2 input(s) failed" in err and f"  {clip}: " in err
    assert sorted(os.listdir(out)) == ["clip.mp4", "p.png"]
    assert (out / "clip.mp4").read_bytes() == earlier
    monkeypatch.setattr(cv2, "VideoWriter", _FullDiskWriter.real)
    # the disk has room again: written, and the next run removes a killed run's temporary video
    stale = out / f".clip.mp4.tmp.{DEAD_PID}.0123abcd"
    stale.mkdir()
    (stale / "clip.mp4").write_bytes(earlier[:100])
    status, err = _demo(capsys, "--input", clip, "--output", str(out))
    assert status == 0, err
    assert _frames(out / "clip.mp4") == (5, (64, 48))
    assert sorted(os.listdir(out)) == ["clip.mp4", "p.png"]


def test_video_writer_commits_only_a_video_read_back_whole(tmp_path):
    frame = np.full((24, 32, 3), 128, np.uint8)
    path = str(tmp_path / "v.mp4")
    with VideoWriter(path, 10, (32, 24)) as writer:
        for _ in range(3):
            writer.write(frame)
        (temp,) = os.listdir(tmp_path)  # the file is written under a temporary name
        assert temp.startswith(".v.mp4.tmp.") and os.listdir(tmp_path / temp) == ["v.mp4"]
        writer.commit()
    assert _frames(path) == (3, (32, 24)) and os.listdir(tmp_path) == ["v.mp4"]
    before = open(path, "rb").read()
    # no frame, or an error before the commit: nothing replaced, nothing left
    with pytest.raises(VideoWriteError, match="no frame to write"):
        with VideoWriter(path, 10, (32, 24)) as writer:
            writer.commit()
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(path, 10, (32, 24)) as writer:
            writer.write(frame)
            raise KeyboardInterrupt
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["v.mp4"]


_FILE_SIZE_LIMIT = r"""
import resource, signal, sys
import numpy as np
sys.path.insert(0, {tools!r})
import demo
from pointrend_seg.engine.cli import run_tool

class Bands:  # the model: 5 vertical bands of class ids
    def predict_labels(self, image):
        ids = np.arange(image.shape[1]) * 5 // image.shape[1]
        return np.broadcast_to(ids, image.shape[:2]).astype(np.uint8)

demo.build_predictor = lambda cfg, **kwargs: Bands()
# a full disk, for this process: writes past {limit} bytes of a file fail (EFBIG)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
sys.exit(run_tool(lambda: demo.main(sys.argv[1:]), prog="demo.py"))
"""


@pytest.mark.slow
def test_video_on_a_full_disk_is_a_failed_input(tmp_path):
    """The audit's case with real write errors (no monkeypatched writer): a process whose files
    cannot grow past 64 KiB (RLIMIT_FSIZE; the audit filled a small tmpfs), a video of more."""
    limit = 64 * 1024
    rng = np.random.default_rng(0)
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for _ in range(20):  # noise: the output video is far larger than the limit
        writer.write(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / "out"
    earlier = _earlier_video(out)
    script = tmp_path / "full_disk_demo.py"
    script.write_text(_FILE_SIZE_LIMIT.format(tools=os.path.join(REPO_ROOT, "tools"),
                                              limit=limit))
    proc = tool_process.run([sys.executable, str(script), "--config-file", DEMO_CONFIG,
                             "--input", str(clip), "--output", str(out), "MODEL.WEIGHTS", "w.pth"],
                            cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"  {clip}: the video written for {out / 'clip.mp4'} does not open" in proc.stderr
    assert f"wrote {out / 'clip.mp4'}" not in proc.stdout + proc.stderr
    assert (out / "clip.mp4").read_bytes() == earlier and os.listdir(out) == ["clip.mp4"]


# ---- 2. Ctrl-C ---------------------------------------------------------------------------------
def test_ctrl_c_during_a_video_file_stops_the_demo_and_keeps_the_earlier_video(
        tmp_path, capsys, monkeypatch):
    clip = _video(tmp_path / "clip.avi", 8)
    other = _video(tmp_path / "other.avi", 3)
    out = tmp_path / "out"
    earlier = _earlier_video(out)
    _interrupting_model(monkeypatch, after=3)
    # before: "interrupted; OUT/clip.mp4 holds the frames so far" (3 frames), other.avi was
    # written next, exit 0
    status, err = _demo(capsys, "--input", clip, other, "--output", str(out), "--save-masks")
    assert status == 130
    assert err.strip().splitlines()[-1] == "demo.py: interrupted"  # below the progress bar
    assert (out / "clip.mp4").read_bytes() == earlier
    # the masks of the frames done are written, as the pictures of the images done
    assert sorted(os.listdir(out)) == ["clip.mp4", "masks"]
    assert sorted(os.listdir(out / "masks" / "clip")) == [f"{i:06d}.png" for i in range(3)]


def test_ctrl_c_ends_a_webcam_stream_and_its_video_is_written(tmp_path, capsys, monkeypatch):
    stream = _video(tmp_path / "stream.avi", 8)

    class Webcam(VideoReader):
        """Webcam 0, its frames those of ``stream`` (no frame count, as a webcam)."""

        def __init__(self, source, *args):
            super().__init__(media.MediaSource("video", stream), *args)
            self.source, self.num_frames = source, None

    monkeypatch.setattr(demo, "VideoReader", Webcam)
    _interrupting_model(monkeypatch, after=3)
    out = tmp_path / "out"
    earlier = _earlier_video(out, "webcam0.mp4")
    monkeypatch.chdir(tmp_path)  # "0" is not a file here: a webcam index
    status, err = _demo(capsys, "--input", "0", "--output", str(out))
    assert status == 0, err
    assert (out / "webcam0.mp4").read_bytes() != earlier
    assert _frames(out / "webcam0.mp4") == (3, (64, 48))
    assert os.listdir(out) == ["webcam0.mp4"]


def test_ctrl_c_is_one_line_that_says_so():
    """The tools' Ctrl-C line (run_tool): before, "demo.py: " (a KeyboardInterrupt without a
    message is a true object: ``e or 'interrupted'`` printed its empty text)."""
    def interrupted(message=None):
        def main():
            raise KeyboardInterrupt(*([message] if message else []))
        return main

    for main, line in [(interrupted(), "demo.py: interrupted"),
                       (interrupted("interrupted at iteration 7"),
                        "demo.py: interrupted at iteration 7")]:
        err = io.StringIO()
        with redirect_stderr(err):
            assert run_tool(main, prog="demo.py") == 130
        assert err.getvalue() == line + "\n"


# ---- 3. a link in the output folder ------------------------------------------------------------
def test_outputs_replace_a_link_and_never_write_through_it(tmp_path, capsys, fake_model):
    clip = _video(tmp_path / "clip.avi", 4)
    photo = _photo(tmp_path / "p.png")
    precious = tmp_path / "precious.txt"
    precious.write_text("not a video")
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip.mp4").symlink_to(precious)
    (out / "p.png").symlink_to(precious)
    # before: precious.txt held the MP4 data
    status, err = _demo(capsys, "--input", photo, clip, "--output", str(out))
    assert status == 0, err
    assert precious.read_text() == "not a video"
    assert not (out / "clip.mp4").is_symlink() and not (out / "p.png").is_symlink()
    assert _frames(out / "clip.mp4") == (4, (64, 48))


# ---- 4. two inputs writing the same output -----------------------------------------------------
def test_inputs_that_would_write_the_same_output_are_refused(tmp_path, capsys, no_model, prefix):
    photos = tmp_path / "photos"
    photos.mkdir()
    a, a_points = _photo(photos / "a.png"), _photo(photos / "a_points.png", seed=1)
    # before: a_points.png's picture replaced a.png's subdivision figure, exit 0
    status, err = _demo(capsys, "--input", str(photos), "--output", str(tmp_path / "o"),
                        "--show-points")
    assert status == 2
    assert _one_error_line(err) == (
        f"inputs {[a, a_points]} would write the same output {tmp_path / 'o' / 'a_points.png'}: "
        "give them in separate runs or rename them")
    assert not os.path.exists(tmp_path / "o")
    # the images of a --dataset too
    images, masks = _folder_dataset(str(tmp_path / "data"), stems=("a", "a_points"))
    status, err = _demo(capsys, "--dataset", f"{prefix}_ds", "--show-points", "--output",
                        str(tmp_path / "o"), "--register-folder", f"{prefix}_ds", images, masks,
                        "background,disc", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2")
    assert status == 2
    assert _one_error_line(err).startswith(
        f"inputs {[os.path.join(images, 'a.png'), os.path.join(images, 'a_points.png')]} would "
        f"write the same output {tmp_path / 'o' / 'a_points.png'}")
    assert not os.path.exists(tmp_path / "o")
    # the stems of a video and an image (b.png, masks/b.png; b.mp4, masks/b/) do not clash
    parsed = demo.parse_args(["--config-file", "c.yaml", "--input", _photo(tmp_path / "b.png"),
                              _video(tmp_path / "b.avi", 2), "--output", "o", "--save-masks"])
    assert [s.kind for s, _ in demo._jobs(parsed)[0]] == ["image", "video"]


def test_inputs_without_a_common_output_run(tmp_path, capsys, fake_model):
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "a.png")
    _photo(photos / "a_points.png", seed=1)
    status, err = _demo(capsys, "--input", str(photos), "--output", str(tmp_path / "o"))
    assert status == 0, err
    assert sorted(os.listdir(tmp_path / "o")) == ["a.png", "a_points.png"]


# ---- 5. 6. the command line --------------------------------------------------------------------
@pytest.mark.parametrize("flag, value, least", [
    ("--max-frames", "-1", 0), ("--num-images", "0", 1), ("--num-images", "-1", 1),
    ("--max-side", "-5", 1), ("--max-side", "0", 1), ("--max-image-pixels", "-1", 0)])
def test_integer_flags_are_checked(tmp_path, capsys, no_model, flag, value, least):
    # before: --max-frames -1 wrote a 0-frame video ("wrote", exit 0), --num-images -1 all but
    # the last image, --max-side -5 a codec error (videos) or nothing (images),
    # --max-image-pixels -1 refused every file
    with pytest.raises(SystemExit) as e:
        demo.main(["--config-file", "c.yaml", "--input", "x.png", "--output",
                   str(tmp_path / "o"), flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].endswith(  # PROG: error: ...
        f": error: argument {flag}: {value!r} must be an integer >= {least}")
    # 0 where it means "no limit"
    if least == 0:
        assert getattr(demo.parse_args(["--config-file", "c.yaml", "--output", "o", flag, "0"]),
                       flag[2:].replace("-", "_")) == 0


def test_output_that_is_a_file_is_one_line(tmp_path, capsys, no_model):
    photo = _photo(tmp_path / "p.png")
    afile = tmp_path / "afile"
    afile.write_text("a file")
    # before: a FileExistsError traceback
    for output, shown in [(afile, str(afile)), (afile / "sub", f"{afile / 'sub'}: {afile}")]:
        status, err = _demo(capsys, "--input", photo, "--output", str(output))
        assert status == 2
        assert _one_error_line(err) == (f"--output {shown} is a file, not a folder; give another "
                                        "--output")
    assert afile.read_text() == "a file"
