#!/usr/bin/env python
"""
Run a trained model on images, folders, glob patterns, video files or a webcam and write pictures
of its predictions.

    tools/demo.py --config-file CFG --input a.jpg photos/ 'shots/*.png' clip.mp4 --output out/ \\
        MODEL.WEIGHTS model.pth
    tools/demo.py --config-file CFG --input 0 --max-frames 300 --output out/ MODEL.WEIGHTS model.pth
    tools/demo.py --config-file CFG --dataset synthetic_shapes_sem_seg_val --num-images 4 \\
        --output out/ MODEL.WEIGHTS model.pth      # prediction | ground truth

--input takes image files, folders (their images and videos), glob patterns (quoted), video files
(.mp4 .avi .mov .mkv ...) and webcam indices (0, 1, ...). Written to --output:

    STEM.png           each image: the photo | the prediction (| the ground truth, with
                       --dataset), the classes in their legend colours
    STEM_points.png    with --show-points, each image: the coarse prediction, the cells each
                       subdivision step re-predicted (on the prediction after the step), the
                       final prediction (PointRend models; images, not videos)
    STEM.mp4           each video or webcam (webcamN.mp4): its frames with the prediction drawn in,
                       same size and frame rate
    masks/STEM.png     with --save-masks: the predicted class ids (8-bit PNG, 16-bit above 256
    masks/STEM/N.png   classes; frame N of a video), a mask folder that --register-folder reads

Class names come from --classes, else from the --dataset or --register-folder dataset, else from
the checkpoint (those it was trained with: tools/train_net.py writes them into every checkpoint),
else from the config's DATASETS.TEST / DATASETS.TRAIN metadata;
they are checked before the model runs, and their number must be the model's classes.

Memory follows the model's input, not the file: an image file of more than --max-image-pixels
pixels (default INPUT.MAX_IMAGE_PIXELS, 100 megapixels; 0: no limit) is refused from its header,
before decoding; below, the model sees the image resized (INPUT.MIN_SIZE_TEST), the class ids come
back to full size band by band (no K full-size logit maps), and pictures are drawn at most
--max-side pixels wide and high (masks keep the full size). Video frames likewise: a video whose
frame size is over --max-image-pixels is refused from its header; larger frames are reduced to
--max-side before the model sees them and the video is written at that size (masks keep the
frame's size: the reduced frame's class ids, scaled up).

Inputs are never outputs: a run that would write a file over one of its inputs (--output DIR
with photos DIR/STEM.png), or into the image or mask folder of a registered dataset (--output,
or its masks/ with --save-masks), is refused before the model is built, as are two inputs that
would write the same output (x.png in two folders; with --show-points, a.png and a_points.png).
Folders' files whose extension is not an image's (GIF included) or a video's are left out with a
warning counting them.

Every file is written whole or not at all: under a temporary name beside it, renamed over the
earlier file of that name (or a link there, which is replaced, not written through) once complete;
a video only once it has been read back with as many frames as were written (OpenCV reports no
write error: a full disk gave a video without its index). Ctrl-C ends a webcam's stream (its
video is written) and stops the demo anywhere else, the file being written left as it was.

An input that cannot be read or predicted, or whose video cannot be written, is reported with its
file and reason and the others are still written; a video that ends before the frame count of its
header (a truncated file) is written as far as it goes and reported too; a summary lists them.
Exit status: 0 when every input was written whole, 1 when some were not, 2 for a bad config or
command line, or when the only input is a video or webcam that cannot be used (one line, demo.py:
error: ...; --debug shows the traceback), 130 after Ctrl-C.
"""
import argparse
import gc
import logging
import os
import re
import sys

import numpy as np
import torch
from tqdm import tqdm

import pointrend_seg  # noqa: F401  (first: registers the components, imports Detectron2 quietly)

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger

from pointrend_seg.config import ConfigError
from pointrend_seg.data import BadInputError, read_image_file, read_label_file
from pointrend_seg.engine import build_predictor
from pointrend_seg.engine.predictor import require_weights
from pointrend_seg.files import remove_stale_temp_files
from pointrend_seg.modeling import GeneralizedSemanticSegmentor, PointRendSegHead
from pointrend_seg.engine.cli import (
    OutputIsInputError,
    ToolUsageError,
    add_class_name_arguments,
    add_config_arguments,
    add_debug_argument,
    add_partial_weights_argument,
    class_names_for,
    config_from_args,
    debug_requested,
    parse_tool_args,
    refuse_output_folder_over_a_file,
    refuse_output_over_inputs,
    run_tool,
    setup_tool_output,
)
from pointrend_seg.engine.media import (
    MediaSource,
    VideoReader,
    VideoWriteError,
    VideoWriter,
    expand_inputs,
    write_label_png,
    write_png,
)
from pointrend_seg.visualization import (draw_sem_seg_figure, draw_subdivision_figure,
                                         resize_nearest)

logger = logging.getLogger("pointrend_seg.demo")

# Default of --max-side.
MAX_PICTURE_SIDE = 2048


def _int_at_least(least):
    """An argparse ``type``: an integer >= ``least`` (else a usage error naming the flag)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"{text!r} must be an integer >= {least}")
        return value
    return parse


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--input", nargs="+", default=[],
                   help="image / video files, folders, glob patterns, webcam indices")
    p.add_argument("--dataset", help="a registered dataset to take images (and labels) from")
    p.add_argument("--num-images", type=_int_at_least(1), default=4,
                   help="images taken from --dataset")
    p.add_argument("--output", required=True, help="output folder")
    add_class_name_arguments(p)
    p.add_argument("--save-masks", action="store_true",
                   help="also write the predicted class ids as PNG under OUTPUT/masks/")
    p.add_argument("--show-points", action="store_true",
                   help="also write STEM_points.png per image: the coarse prediction, the cells "
                        "each subdivision step re-predicted, the final prediction (PointRend)")
    p.add_argument("--max-frames", type=_int_at_least(0), default=0,
                   help="stop each video / webcam after this many frames (0: no limit)")
    p.add_argument("--max-image-pixels", type=_int_at_least(0), default=None,
                   help="refuse image files with more pixels, from their header (default: "
                        "INPUT.MAX_IMAGE_PIXELS of the config, 100 megapixels; 0: no limit)")
    p.add_argument("--max-side", type=_int_at_least(1), default=MAX_PICTURE_SIDE,
                   help="largest width / height of a picture of an image or of a video "
                        "frame, in pixels (larger images are drawn reduced, larger video frames "
                        f"reduced before the model sees them; default {MAX_PICTURE_SIDE}); "
                        "masks keep the image's or the frame's size")
    add_partial_weights_argument(p)
    add_debug_argument(p)
    p.add_argument("opts", nargs="*", metavar="KEY VALUE",
                   help="config overrides, e.g. MODEL.WEIGHTS model.pth (flags may follow)")
    return parse_tool_args(p, argv, list_dests=("input",))


def _jobs(args):
    """([(MediaSource, (label file, label map) or None)], dataset dicts): the first images of
    --dataset (and all its dicts), or the --input specs (and no dicts). Inputs that would write
    the same output file are refused."""
    if bool(args.input) == bool(args.dataset):
        raise ToolUsageError("give either --input (files, folders, patterns, webcam) or --dataset")
    dicts = []
    if args.dataset:
        if args.dataset not in DatasetCatalog.list():
            raise ToolUsageError(f"dataset {args.dataset!r} is not registered")
        dicts = DatasetCatalog.get(args.dataset)
        jobs = [(MediaSource("image", d["file_name"]),
                 (d["sem_seg_file_name"], d.get("sem_seg_label_map"))
                 if d.get("sem_seg_file_name") else None)
                for d in dicts[: args.num_images]]
    else:  # FileNotFoundError: exit 2
        jobs = [(source, None) for source in expand_inputs(args.input)]
    writers = {}  # output name: the inputs that write it
    for source, _ in jobs:
        for name in _output_names(source, args.show_points, args.save_masks):
            writers.setdefault(name, []).append(source.path)
    for name, paths in writers.items():
        if len(paths) > 1:  # e.g. a.png --show-points (a_points.png) and a_points.png
            raise ToolUsageError(
                f"inputs {paths} would write the same output {os.path.join(args.output, name)}: "
                "give them in separate runs or rename them")
    return jobs, dicts


def _output_names(source, show_points, save_masks):
    """The names (relative to --output) of what ``source`` writes; a video's masks are the
    folder masks/STEM/ (of frames 000000.png ...)."""
    if source.kind == "image":
        return ([f"{source.stem}.png"] + [f"{source.stem}_points.png"] * show_points
                + [os.path.join("masks", f"{source.stem}.png")] * save_masks)
    return [f"{source.stem}.mp4"] + [os.path.join("masks", source.stem, "")] * save_masks


def _file_id(path):
    """(device, inode) of an existing file or folder (links followed), else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _dataset_folders(dataset_dicts):
    """{(device, inode): (folder, what)} of the image and mask folders of every registered
    dataset (``image_root`` / ``sem_seg_root`` of its metadata) and of ``dataset_dicts``
    (the folders of their ``file_name`` / ``sem_seg_file_name``)."""
    folders = {}
    for name in MetadataCatalog.list():
        meta = MetadataCatalog.get(name)
        for key, what in (("image_root", "image"), ("sem_seg_root", "mask")):
            path = meta.get(key, None)
            if isinstance(path, str) and _file_id(path):
                folders.setdefault(_file_id(path), (path, f"the {what} folder of dataset {name!r}"))
    for key, what in (("file_name", "image"), ("sem_seg_file_name", "mask")):
        for folder in {os.path.dirname(d[key]) or "." for d in dataset_dicts if d.get(key)}:
            if _file_id(folder):
                folders.setdefault(_file_id(folder), (folder, f"a {what} folder of the dataset"))
    return folders


def refuse_inputs_as_outputs(args, jobs, dataset_dicts):
    """
    Raise :class:`OutputIsInputError` (before the model is built) when this run would write
    over its inputs: an output file that is an input file
    (:func:`~pointrend_seg.engine.cli.refuse_output_over_inputs`: ``--input DIR --output DIR``
    wrote STEM.png over the photo STEM.png), or an output folder (``--output``, its ``masks/``)
    that is the image or mask folder of a registered dataset (``--save-masks`` into a dataset
    root replaced its ground truth masks/STEM.png).
    """
    inputs = [("input", p) for source, label in jobs
              for p in ([source.path] if source.kind != "webcam" else []) + list(label or [])[:1]]
    outputs = []
    for source, _ in jobs:
        for name in _output_names(source, args.show_points, args.save_masks):
            if name.endswith(os.sep):  # masks/STEM/000000.png ...: inputs of such a name there
                outputs += [os.path.join(args.output, name, os.path.basename(p)) for _, p in inputs
                            if re.fullmatch(r"\d{6}\.png", os.path.basename(p))]
            else:
                outputs.append(os.path.join(args.output, name))
    refuse_output_over_inputs(outputs, inputs)
    mask_folder = os.path.join(args.output, "masks")
    folders = _dataset_folders(dataset_dicts)
    for output in [args.output] + [mask_folder] * args.save_masks:
        if _file_id(output) in folders:
            folder, what = folders[_file_id(output)]
            raise OutputIsInputError(
                f"output folder {output} is {what} ({folder}): the pictures"
                f"{' and masks' if args.save_masks else ''} written there would replace or "
                "join its files; give another --output")


class Demo:
    """Predicts with ``predictor`` and writes the pictures (and masks) of each input."""

    def __init__(self, predictor, class_names, colors, output, save_masks, max_frames,
                 show_points=False, max_pixels=None, max_side=MAX_PICTURE_SIDE):
        self.predictor = predictor
        self.class_names, self.colors = class_names, colors
        self.output, self.save_masks, self.max_frames = output, save_masks, max_frames
        self.show_points = show_points
        self.max_pixels, self.max_side = max_pixels, max_side

    def _mask_path(self, *parts):
        path = os.path.join(self.output, "masks", *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def image(self, source, label=None):
        """``label``: (label file, the dataset's label map or None) for a ground-truth panel."""
        image_bgr = read_image_file(source.path, "BGR", self.max_pixels)
        labels = self.predictor.predict_labels(image_bgr)
        panels, titles = [labels], ["prediction"]
        if label:
            panels.append(read_label_file(*label, max_pixels=self.max_pixels))
            titles.append("ground truth")
        # The photo, then the classes in their legend colours (not blended over the photo,
        # which shifts a colour from region to region).
        figure = draw_sem_seg_figure(image_bgr[:, :, ::-1], panels, self.class_names,
                                     self.colors, titles=titles, max_side=self.max_side,
                                     photo=True, alpha=1.0)
        write_png(os.path.join(self.output, f"{source.stem}.png"), figure)
        if self.save_masks:
            write_label_png(self._mask_path(f"{source.stem}.png"), labels, len(self.class_names))
        if self.show_points:
            write_png(os.path.join(self.output, f"{source.stem}_points.png"),
                      self.points_figure(image_bgr))

    def points_figure(self, image_bgr):
        """The subdivision figure of a BGR image, at the size the predictor feeds the model."""
        p = self.predictor
        image = image_bgr[:, :, ::-1] if p.input_format == "RGB" else image_bgr
        image = p.aug.get_transform(image).apply_image(image)  # resized as DefaultPredictor does
        with torch.no_grad():
            features, size = p.model.backbone_features(
                torch.as_tensor(image.astype("float32").transpose(2, 0, 1)))
            trace = p.model.sem_seg_head.trace_subdivision(features, size)
        steps = [s._replace(xy=s.xy.cpu().numpy(), labels=s.labels.cpu().numpy())
                 for s in trace.steps]
        rgb = image if p.input_format == "RGB" else image[:, :, ::-1]
        return draw_subdivision_figure(
            np.ascontiguousarray(rgb), trace.coarse_labels.cpu().numpy(), trace.coarse_stride,
            steps, trace.logits.argmax(0).cpu().numpy(), self.class_names, self.colors)

    def video(self, source):
        """
        Every frame (up to ``max_frames``) into OUTPUT/STEM.mp4, same frame rate and size, or
        reduced to at most ``max_side`` pixels wide and high like the pictures of images: the
        predictor sees the reduced frame, and masks (``save_masks``) keep the frame's size (the
        reduced frame's class ids scaled up, nearest). Frames of more than ``max_pixels`` are
        refused from the header (:class:`VideoReader`). The video replaces OUTPUT/STEM.mp4 only
        once written whole and read back (:class:`VideoWriter`). Ctrl-C ends a webcam's stream
        (its video is written); for a video file it stops the demo (KeyboardInterrupt), the
        earlier OUTPUT/STEM.mp4 kept.

        Returns:
            None, or why the input failed: the video could not be written (read back, e.g. a full
            disk; the earlier file kept), or it was written but is incomplete (fewer frames read
            than its header announces: a truncated file, which OpenCV just ends early).
        """
        path = os.path.join(self.output, f"{source.stem}.mp4")
        stopped = False  # by --max-frames or Ctrl-C: fewer frames than the file's are expected
        # The reader reduces the frames as it decodes them (the full-size frame freed at once).
        with VideoReader(source, self.max_pixels, self.max_side) as reader:
            with VideoWriter(path, reader.fps, reader.frame_size) as writer:
                total = reader.num_frames
                if self.max_frames:
                    total = min(total or self.max_frames, self.max_frames)
                frames = tqdm(reader, total=total, unit="frame", desc=source.stem)
                # Each frame's drawing leaves matplotlib figures in reference cycles: collected
                # after every frame (the objects from before frozen, so that a collection takes
                # ~3 ms, not ~0.2 s); else a large video grew by ~0.1 GB a frame until Python's
                # collector ran (8000x6000: 1.5 to 2.0 GB in 10 frames).
                gc.freeze()
                try:
                    for index, frame in enumerate(frames):
                        if self.max_frames and index >= self.max_frames:
                            stopped = True
                            break
                        labels = self.predictor.predict_labels(frame)
                        drawn = draw_sem_seg_figure(frame[:, :, ::-1], [labels], self.class_names,
                                                    self.colors, min_side=0, legend_inside=True)
                        writer.write(drawn[:, :, ::-1])
                        if self.save_masks:  # at the video's frame size
                            width, height = reader.size
                            write_label_png(self._mask_path(source.stem, f"{index:06d}.png"),
                                            resize_nearest(labels, (height, width)),
                                            len(self.class_names))
                        del frame, labels, drawn
                        gc.collect()
                except KeyboardInterrupt:
                    if source.kind != "webcam":  # stops the demo; the writer deletes its file
                        raise
                    stopped = True  # how a webcam stream ends
                    logger.info(f"interrupted; writing the {writer.frames_written} frames so far "
                                f"to {path}")
                finally:
                    frames.close()
                    gc.unfreeze()
                try:
                    writer.commit()
                except VideoWriteError as e:
                    logger.error(f"skipped {source.path}: {e}")
                    return str(e)
            incomplete = None if stopped else reader.missing_frames()
        if incomplete:
            logger.warning(f"{source.path}: {incomplete}; {path} holds the "
                           f"{reader.frames_read} frames read")
            return f"{incomplete}; {path} holds the {reader.frames_read} frames read"
        logger.info(f"wrote {path}")
        return None


def _remove_stale_temp_files(output, jobs):
    """The temporary files (videos, pictures, masks) that killed runs left in the folders this
    run writes."""
    masks = os.path.join(output, "masks")
    folders = [output, masks] + [os.path.join(masks, s.stem) for s, _ in jobs if s.kind != "image"]
    for folder in folders:
        if os.path.isdir(folder):
            removed = remove_stale_temp_files(folder)
            if removed:
                logger.info(f"removed {len(removed)} temporary file(s) of an earlier, stopped "
                            f"run: {removed}")


def main(argv=None):
    args = parse_args(argv)
    refuse_output_folder_over_a_file(args.output)
    setup_logger(name="pointrend_seg")
    run, weights = config_from_args(args)  # --config-file, or a --run folder
    require_weights(run, weights, tool=True)
    jobs, dataset_dicts = _jobs(args)
    # Before the model is built: a wrong name list or output must not cost a run.
    names, colors = class_names_for(run, args, weights, [args.dataset] if args.dataset else [])
    refuse_inputs_as_outputs(args, jobs, dataset_dicts)
    os.makedirs(args.output, exist_ok=True)
    _remove_stale_temp_files(args.output, jobs)
    predictor = build_predictor(run, weights=weights, partial_weights=args.partial_weights)
    model = getattr(predictor, "model", None)
    if args.show_points and not (isinstance(model, GeneralizedSemanticSegmentor)
                                 and isinstance(model.sem_seg_head, PointRendSegHead)):
        raise ConfigError(
            "--show-points shows PointRend's subdivision: it needs MODEL.META_ARCHITECTURE "
            "GeneralizedSemanticSegmentor with MODEL.SEM_SEG_HEAD.NAME PointRendSegHead (this "
            f"config: {type(model).__name__}, {type(getattr(model, 'sem_seg_head', None)).__name__})")
    max_pixels = (run.settings.INPUT.MAX_IMAGE_PIXELS if args.max_image_pixels is None
                  else args.max_image_pixels)
    demo = Demo(predictor, names, colors, args.output, args.save_masks, args.max_frames,
                args.show_points, max_pixels=max_pixels, max_side=args.max_side)
    images = [(s, label) for s, label in jobs if s.kind == "image"]
    failed = []  # (input, reason)
    for source, label in tqdm(images, unit="image", disable=len(images) < 2):
        try:
            demo.image(source, label)
        except (BadInputError, OSError, ValueError, MemoryError) as e:
            # One bad file (unreadable, too large, ...) does not stop the others.
            logger.error(f"skipped {source.path}: {e}")
            failed.append((source.path, str(e)))
    if len(images) > len(failed):
        logger.info(f"wrote {len(images) - len(failed)} picture(s) to {args.output}")
    for source, _ in jobs:
        if source.kind != "image":
            try:
                incomplete = demo.video(source)
            except (BadInputError, OSError) as e:  # OpenCV cannot open it, too large, ...
                if len(jobs) == 1 and isinstance(e, BadInputError):
                    raise
                if len(jobs) == 1:
                    raise ToolUsageError(str(e)) from None
                logger.error(f"skipped {source.path}: {e}")
                failed.append((source.path, str(e)))
                continue
            if incomplete:  # written, but fewer frames than its header announced
                failed.append((source.path, incomplete))
    if failed:
        print(f"demo.py: {len(failed)} of {len(jobs)} input(s) failed, the others were written "
              f"to {args.output}:", file=sys.stderr)
        for path, reason in failed:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    setup_tool_output()
    sys.exit(run_tool(main, prog="demo.py", debug=debug_requested()))
