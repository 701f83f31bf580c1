"""
A predictor's inputs from a command line (image files, folders, glob patterns, video files,
webcam indices), video frames read and written with OpenCV, and pictures and class-id masks
written as PNG; videos and pictures are written whole or not at all.
"""
import dataclasses
import glob
import logging
import os
import shutil
from collections import Counter
from typing import Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from ..data.datasets.folder import IMAGE_EXTENSIONS, _subfolder_hint
from ..data.readers import BadInputError, too_large_message
from ..files import PendingWrite, atomic_write, temp_folder
from ..visualization import fit_within

__all__ = ["VIDEO_EXTENSIONS", "MediaSource", "VideoReader", "VideoWriteError", "VideoWriter",
           "expand_inputs", "write_label_png", "write_png"]

logger = logging.getLogger(__name__)

# Video file extensions (compared case-insensitively); other files are read as images.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


@dataclasses.dataclass(frozen=True)
class MediaSource:
    """One input: ``kind`` "image", "video" or "webcam"; ``path`` a file, or a webcam index."""

    kind: str
    path: str

    @property
    def stem(self) -> str:
        """Base name without extension ("webcam0" for webcam 0): the name of its outputs."""
        if self.kind == "webcam":
            return f"webcam{self.path}"
        return os.path.splitext(os.path.basename(self.path))[0]


def _file_source(path) -> Optional[MediaSource]:
    ext = os.path.splitext(path)[1].lower()
    if ext in VIDEO_EXTENSIONS:
        return MediaSource("video", path)
    if ext in IMAGE_EXTENSIONS:
        return MediaSource("image", path)
    return None


def expand_inputs(specs: Sequence[str]) -> List[MediaSource]:
    """
    Each spec is an image or video file (by extension; any other file is read as an image), a
    folder (its image and video files, sorted; a warning counts the others), a glob pattern (the
    image and video files it matches, sorted) or a webcam index (digits that are not a file name).

    Raises:
        FileNotFoundError: a spec that is none of these, or a folder / pattern without images or
            videos (the message names it).
    """
    sources = []
    for spec in specs:
        if os.path.isdir(spec):
            files = [f for f in sorted(os.listdir(spec)) if os.path.isfile(os.path.join(spec, f))]
            found = [_file_source(os.path.join(spec, f)) for f in files]
            left_out = [f for f, s in zip(files, found) if s is None]
            if left_out:  # said, not silent: e.g. .heic photos
                counts = Counter(os.path.splitext(f)[1].lower() or "no extension" for f in left_out)
                logger.warning(
                    f"{len(left_out)} file(s) of folder {spec} are left out, their extension is "
                    f"not an image's or a video's: "
                    + ", ".join(f"{ext} x{n}" for ext, n in sorted(counts.items()))
                    + f"; e.g. {left_out[0]} (give a file itself to read it as an image)")
            found = [s for s in found if s is not None]
            if not found:  # given the parent folder of the photos: the hint names theirs
                raise FileNotFoundError(f"no images or videos in folder {spec}" + _subfolder_hint(
                    spec, IMAGE_EXTENSIONS + VIDEO_EXTENSIONS))
            sources += found
        elif os.path.isfile(spec):
            sources.append(_file_source(spec) or MediaSource("image", spec))
        elif any(ch in spec for ch in "*?["):
            found = [_file_source(p) for p in sorted(glob.glob(spec)) if os.path.isfile(p)]
            found = [s for s in found if s is not None]
            if not found:
                raise FileNotFoundError(f"no images or videos match {spec!r}")
            sources += found
        elif spec.isdigit():
            sources.append(MediaSource("webcam", spec))
        else:
            raise FileNotFoundError(f"input not found: {spec}")
    return sources


# The decoder threads of a video file (FFmpeg: one per core, each keeping frames) are bounded to
# hold at most this many pixels of frames together; 1080p keeps every core.
MAX_DECODER_PIXELS = 32_000_000


class _ClosedOnExit:
    """``with`` closes it (its ``close``)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class VideoReader(_ClosedOnExit):
    """
    Frames of a video file or a webcam (OpenCV), as (H, W, 3) uint8 BGR arrays. A video file
    whose frames (its header's size) have over ``max_pixels`` pixels (0 / None: no limit) is a
    :class:`BadInputError` before a frame is decoded, as images are. Frames larger than
    ``max_side`` are yielded reduced to fit (:func:`~pointrend_seg.visualization.fit_within`,
    area averaging), the full-size frame freed at once.

    Attributes:
        fps (float): frames per second (25 if the source does not say).
        num_frames (int or None): frame count of a file as its header gives it; None for webcams.
        size (tuple): (width, height) of the video's frames (its header's).
        frame_size (tuple): (width, height) of the frames yielded (``size``, or reduced).
        frames_read (int): frames decoded so far.
    """

    def __init__(self, source: MediaSource, max_pixels: Optional[int] = None,
                 max_side: Optional[int] = None):
        target = int(source.path) if source.kind == "webcam" else source.path
        self.source = source
        self._capture = cv2.VideoCapture(target)
        if not self._capture.isOpened():
            what = f"webcam {source.path}" if source.kind == "webcam" else f"video {source.path}"
            raise OSError(f"OpenCV cannot open {what}")
        self.fps = self._capture.get(cv2.CAP_PROP_FPS) or 25.0
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.num_frames = count if source.kind == "video" and count > 0 else None
        self.size = (int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.frame_size = fit_within(self.size, max_side)
        self.frames_read = 0
        width, height = self.size
        if source.kind == "video" and max_pixels and width * height > max_pixels:
            self.close()
            raise BadInputError(too_large_message("video", source.path, width, height,
                                                  max_pixels), "video too large", source.path)
        self._bound_decoder_threads(target, width * height)

    def _bound_decoder_threads(self, target, pixels):
        """Reopen a large video file with fewer FFmpeg decoder threads (MAX_DECODER_PIXELS)."""
        if self.source.kind != "video" or not pixels or not hasattr(cv2, "CAP_PROP_N_THREADS"):
            return
        threads = max(1, MAX_DECODER_PIXELS // pixels)
        try:
            current = int(self._capture.get(cv2.CAP_PROP_N_THREADS))
            if self._capture.getBackendName() != "FFMPEG" or 0 < current <= threads:
                return
            capture = cv2.VideoCapture(target, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads])
        except cv2.error:  # an OpenCV without the parameter: keep the capture as it is
            return
        if capture.isOpened():
            self._capture.release()
            self._capture = capture

    def __iter__(self) -> Iterator[np.ndarray]:
        reduce = self.frame_size != self.size
        while True:
            ok, frame = self._capture.read()
            if not ok:
                return
            if reduce:  # the full-size frame is freed here, before the caller's work on it
                frame = cv2.resize(frame, self.frame_size, interpolation=cv2.INTER_AREA)
            self.frames_read += 1
            yield frame

    def missing_frames(self) -> Optional[str]:
        """After reading to the end: why the file is incomplete if fewer frames could be read than
        its header announces (OpenCV just stops), else None. One frame less passes: containers
        without a frame count have it estimated from their duration."""
        if self.num_frames is None or self.frames_read >= self.num_frames - 1:
            return None
        return (f"only {self.frames_read} of the {self.num_frames} frames that its header "
                "announces could be read: the file is truncated or damaged")

    def close(self):
        self._capture.release()


class VideoWriteError(OSError):
    """A video :meth:`VideoWriter.commit` could not read back whole (e.g. a full disk, which
    OpenCV does not report); nothing was renamed onto the target."""


class VideoWriter(_ClosedOnExit):
    """
    An MPEG-4 (``mp4v``) video written frame by frame from (H, W, 3) uint8 BGR arrays of one size
    (``frames_written`` counts them), whole or not at all: into a temporary folder beside ``path``
    (:func:`~pointrend_seg.files.temp_folder`), then read back and renamed onto ``path`` by
    :meth:`commit` (replacing a link, never writing through it). Closed without a commit, ``path``
    keeps its earlier file.
    """

    def __init__(self, path: str, fps: float, size: Tuple[int, int]):
        self.path, self.size = path, tuple(size)
        self.frames_written = 0
        name = os.path.basename(path)
        # a folder, so that the file keeps the extension FFmpeg picks the container from
        self._folder = temp_folder(os.path.dirname(os.path.abspath(path)), name)
        self._tmp = os.path.join(self._folder, name)
        try:
            self._writer = cv2.VideoWriter(self._tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                           self.size)
            opened = self._writer.isOpened()
        except BaseException:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise
        if not opened:
            self.close()
            raise OSError(f"OpenCV cannot write the video {path} (codec mp4v)")

    def write(self, frame_bgr: np.ndarray):
        if (frame_bgr.shape[1], frame_bgr.shape[0]) != self.size:
            raise ValueError(f"{self.path}: frame of {frame_bgr.shape[1]}x{frame_bgr.shape[0]}, "
                             f"the video is {self.size[0]}x{self.size[1]}")
        self._writer.write(np.ascontiguousarray(frame_bgr))
        self.frames_written += 1

    def commit(self):
        """
        Finish the file, check that every frame written decodes from it (OpenCV reports no write
        error: a full disk left a file without its index), and rename it onto ``path``.

        Raises:
            VideoWriteError: no frame was written, or the file does not open or holds fewer
                frames; the temporary file is deleted and ``path`` keeps its earlier file.
        """
        self._writer.release()
        try:
            if not self.frames_written:
                raise VideoWriteError(f"no frame to write: {self.path} not written")
            readable = _decodable_frames(self._tmp)
            if readable != self.frames_written:
                found = ("does not open" if readable is None
                         else f"holds {readable} of the {self.frames_written} frames written")
                kept = " (the earlier file is kept)" if os.path.lexists(self.path) else ""
                raise VideoWriteError(
                    f"the video written for {self.path} {found}, read back: a full disk or a "
                    f"failed write; {self.path} not written{kept}")
            try:
                with open(self._tmp, "rb") as f:
                    os.fsync(f.fileno())
                PendingWrite(self.path, self._tmp).commit()
            except OSError as e:  # e.g. a folder of that name
                raise VideoWriteError(f"{self.path} not written: {e}") from e
        finally:
            self.close()

    def close(self):
        """Release the writer and delete the temporary folder (and a file not committed)."""
        self._writer.release()
        shutil.rmtree(self._folder, ignore_errors=True)


def _decodable_frames(path) -> Optional[int]:
    """How many frames of the video file ``path`` decode (None: it does not open)."""
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            return None
        count = 0
        while capture.grab():  # decodes, without the conversion to BGR (~300 720p frames / s)
            count += 1
        return count
    finally:
        capture.release()


def write_label_png(path: str, labels: np.ndarray, num_classes: int) -> None:
    """Write (H, W) class ids as a one-channel PNG (8-bit up to 256 classes, else 16-bit) that
    :func:`read_label_file` and the folder datasets read back."""
    labels = np.asarray(labels)
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= max(num_classes, 1):
        raise ValueError(f"{path}: class ids outside [0, {num_classes})")
    dtype = np.uint8 if num_classes <= 256 else np.uint16
    write_png(path, labels.astype(dtype))


def write_png(path: str, array: np.ndarray) -> None:
    """``array`` ((H, W) or (H, W, 3) uint8 / uint16) as the PNG file ``path``, whole or not at
    all (:func:`~pointrend_seg.files.atomic_write`)."""
    atomic_write(path, lambda f: Image.fromarray(array).save(f, format="PNG"))
