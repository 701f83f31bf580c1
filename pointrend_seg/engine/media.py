"""
Inputs of a predictor given on a command line (image files, folders, glob patterns, video files,
webcam indices), video frames read and written with OpenCV, and class-id masks written as PNG.
"""
import dataclasses
import glob
import os
from typing import Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from ..data.datasets.folder import IMAGE_EXTENSIONS

__all__ = [
    "VIDEO_EXTENSIONS",
    "MediaSource",
    "VideoReader",
    "VideoWriter",
    "expand_inputs",
    "write_label_png",
]

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
    Each spec is an image or video file (by extension; a file with any other extension is read
    as an image), a folder (its image and video files, not recursive, sorted), a glob pattern
    (``*``, ``?``, ``[``; matching image and video files, sorted) or a webcam index (digits
    that are not a file name).

    Raises:
        FileNotFoundError: a spec that is none of these, or a folder / pattern without images or
            videos (the message names it).
    """
    sources = []
    for spec in specs:
        if os.path.isdir(spec):
            found = [_file_source(os.path.join(spec, f)) for f in sorted(os.listdir(spec))]
            found = [s for s in found if s is not None and os.path.isfile(s.path)]
            if not found:
                raise FileNotFoundError(f"no images or videos in folder {spec}")
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


class VideoReader:
    """
    Frames of a video file or a webcam (OpenCV), as (H, W, 3) uint8 BGR arrays.

    Attributes:
        fps (float): frames per second (25 if the source does not say).
        num_frames (int or None): frame count of a file as its header gives it; None for webcams.
        size (tuple): (width, height).
    """

    def __init__(self, source: MediaSource):
        target = int(source.path) if source.kind == "webcam" else source.path
        self._capture = cv2.VideoCapture(target)
        if not self._capture.isOpened():
            what = f"webcam {source.path}" if source.kind == "webcam" else f"video {source.path}"
            raise OSError(f"OpenCV cannot open {what}")
        self.fps = self._capture.get(cv2.CAP_PROP_FPS) or 25.0
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.num_frames = count if source.kind == "video" and count > 0 else None
        self.size = (int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            ok, frame = self._capture.read()
            if not ok:
                return
            yield frame

    def close(self):
        self._capture.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class VideoWriter:
    """An MPEG-4 (``mp4v``) video file written frame by frame from (H, W, 3) uint8 BGR arrays of
    one size."""

    def __init__(self, path: str, fps: float, size: Tuple[int, int]):
        self.path, self.size = path, tuple(size)
        self._writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, self.size)
        if not self._writer.isOpened():
            raise OSError(f"OpenCV cannot write the video {path} (codec mp4v)")

    def write(self, frame_bgr: np.ndarray):
        if (frame_bgr.shape[1], frame_bgr.shape[0]) != self.size:
            raise ValueError(f"{self.path}: frame of {frame_bgr.shape[1]}x{frame_bgr.shape[0]}, "
                             f"the video is {self.size[0]}x{self.size[1]}")
        self._writer.write(np.ascontiguousarray(frame_bgr))

    def close(self):
        self._writer.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_label_png(path: str, labels: np.ndarray, num_classes: int) -> None:
    """
    Write (H, W) class ids as a one-channel PNG that :func:`read_label_file` and the folder
    datasets read back: 8-bit for up to 256 classes, else 16-bit.
    """
    labels = np.asarray(labels)
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= max(num_classes, 1):
        raise ValueError(f"{path}: class ids outside [0, {num_classes})")
    dtype = np.uint8 if num_classes <= 256 else np.uint16
    Image.fromarray(labels.astype(dtype)).save(path)
