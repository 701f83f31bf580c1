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
the config's DATASETS.TEST / DATASETS.TRAIN metadata; they are checked before the model runs, and
their number must be MODEL.SEM_SEG_HEAD.NUM_CLASSES. With the config.yaml of a run trained on a
folder dataset, give that dataset again: --register-folder NAME IMAGE_DIR MASK_DIR CLASSES.

Memory follows the model's input, not the file: an image file of more than --max-image-pixels
pixels (default INPUT.MAX_IMAGE_PIXELS, 100 megapixels; 0: no limit) is refused from its header,
before decoding; below, the model sees the image resized (INPUT.MIN_SIZE_TEST), the class ids come
back to full size band by band (no K full-size logit maps), and pictures are drawn at most
--max-side pixels wide and high (masks keep the full size).

An input that cannot be read or predicted is reported with its file and reason and the others are
still written; a summary lists the failures. Exit status: 0 when every input was written, 1 when
some failed, 2 for a bad config or command line (one message; --debug shows the traceback).
"""
import argparse
import logging
import os
import sys
from collections import Counter

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import pointrend_seg  # noqa: F401  (first: registers the components, imports Detectron2 quietly)

from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

from pointrend_seg.config import ConfigError
from pointrend_seg.data import BadInputError, read_image_file, read_label_file
from pointrend_seg.engine import build_predictor
from pointrend_seg.modeling import GeneralizedSemanticSegmentor, PointRendSegHead
from pointrend_seg.engine.cli import (
    add_class_name_arguments,
    add_debug_argument,
    class_names_from_args,
    debug_requested,
    parse_tool_args,
    registered_datasets,
    run_tool,
    setup_tool_output,
)
from pointrend_seg.engine.lazy import is_lazy_config, lazy_predictor, load_any_config, yaml_view
from pointrend_seg.engine.media import (
    MediaSource,
    VideoReader,
    VideoWriter,
    expand_inputs,
    write_label_png,
)
from pointrend_seg.visualization import draw_sem_seg_figure, draw_subdivision_figure

logger = logging.getLogger("pointrend_seg.demo")

# Default of --max-side.
MAX_PICTURE_SIDE = 2048


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--input", nargs="+", default=[],
                   help="image / video files, folders, glob patterns, webcam indices")
    p.add_argument("--dataset", help="a registered dataset to take images (and labels) from")
    p.add_argument("--num-images", type=int, default=4, help="images taken from --dataset")
    p.add_argument("--output", required=True, help="output folder")
    add_class_name_arguments(p)
    p.add_argument("--save-masks", action="store_true",
                   help="also write the predicted class ids as PNG under OUTPUT/masks/")
    p.add_argument("--show-points", action="store_true",
                   help="also write STEM_points.png per image: the coarse prediction, the cells "
                        "each subdivision step re-predicted, the final prediction (PointRend)")
    p.add_argument("--max-frames", type=int, default=0,
                   help="stop each video / webcam after this many frames (0: no limit)")
    p.add_argument("--max-image-pixels", type=int, default=None,
                   help="refuse image files with more pixels, from their header (default: "
                        "INPUT.MAX_IMAGE_PIXELS of the config, 100 megapixels; 0: no limit)")
    p.add_argument("--max-side", type=int, default=MAX_PICTURE_SIDE,
                   help="largest width / height of a picture of an image, in pixels (larger "
                        f"images are drawn reduced; default {MAX_PICTURE_SIDE}); masks keep "
                        "the image's size")
    add_debug_argument(p)
    p.add_argument("opts", nargs="*", metavar="KEY VALUE",
                   help="config overrides, e.g. MODEL.WEIGHTS model.pth (flags may follow)")
    return parse_tool_args(p, argv, list_dests=("input",))


def _jobs(args):
    """[(MediaSource, (label file, label map) or None)]: the dataset's first images, or the
    --input specs."""
    if bool(args.input) == bool(args.dataset):
        raise SystemExit("give either --input (files, folders, patterns, webcam) or --dataset")
    if args.dataset:
        if args.dataset not in DatasetCatalog.list():
            raise SystemExit(f"dataset {args.dataset!r} is not registered")
        return [(MediaSource("image", d["file_name"]),
                 (d["sem_seg_file_name"], d.get("sem_seg_label_map"))
                 if d.get("sem_seg_file_name") else None)
                for d in DatasetCatalog.get(args.dataset)[: args.num_images]]
    try:
        jobs = [(source, None) for source in expand_inputs(args.input)]
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    clashes = [stem for stem, n in Counter(s.stem for s, _ in jobs).items() if n > 1]
    if clashes:
        paths = [s.path for s, _ in jobs if s.stem == clashes[0]]
        raise SystemExit(f"inputs {paths} would write the same outputs ({clashes[0]}.*): "
                         "give them in separate runs or rename them")
    return jobs


class Demo:
    """Predicts with ``predictor`` and writes the pictures (and masks) of each input."""

    def __init__(self, predictor, class_names, colors, output, save_masks, max_frames,
                 show_points=False, max_pixels=None, max_side=MAX_PICTURE_SIDE):
        self.predictor = predictor
        self.class_names, self.colors = class_names, colors
        self.output, self.save_masks, self.max_frames = output, save_masks, max_frames
        self.show_points = show_points
        self.max_pixels, self.max_side = max_pixels, max_side

    def predict(self, image_bgr):
        """(H, W) class ids of a BGR image (uint8 up to 256 classes)."""
        return self.predictor.predict_labels(image_bgr)

    def _mask_path(self, *parts):
        path = os.path.join(self.output, "masks", *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def image(self, source, label=None):
        """``label``: (label file, the dataset's label map or None) for a ground-truth panel."""
        image_bgr = read_image_file(source.path, "BGR", self.max_pixels)
        labels = self.predict(image_bgr)
        panels, titles = [labels], ["prediction"]
        if label:
            panels.append(read_label_file(*label, max_pixels=self.max_pixels))
            titles.append("ground truth")
        # The photo, then the classes in their legend colours (not blended over the photo,
        # which shifts a colour from region to region).
        figure = draw_sem_seg_figure(image_bgr[:, :, ::-1], panels, self.class_names,
                                     self.colors, titles=titles, max_side=self.max_side,
                                     photo=True, alpha=1.0)
        Image.fromarray(figure).save(os.path.join(self.output, f"{source.stem}.png"))
        if self.save_masks:
            write_label_png(self._mask_path(f"{source.stem}.png"), labels, len(self.class_names))
        if self.show_points:
            Image.fromarray(self.points_figure(image_bgr)).save(
                os.path.join(self.output, f"{source.stem}_points.png"))

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
        """Every frame (up to ``max_frames``) into OUTPUT/STEM.mp4, same size and frame rate."""
        path = os.path.join(self.output, f"{source.stem}.mp4")
        with VideoReader(source) as reader, VideoWriter(path, reader.fps, reader.size) as writer:
            total = reader.num_frames
            if self.max_frames:
                total = min(total or self.max_frames, self.max_frames)
            frames = tqdm(reader, total=total, unit="frame", desc=source.stem)
            try:
                for index, frame in enumerate(frames):
                    if self.max_frames and index >= self.max_frames:
                        break
                    labels = self.predict(frame)
                    drawn = draw_sem_seg_figure(frame[:, :, ::-1], [labels], self.class_names,
                                                self.colors, min_side=0, legend_inside=True)
                    writer.write(drawn[:, :, ::-1])
                    if self.save_masks:
                        write_label_png(self._mask_path(source.stem, f"{index:06d}.png"), labels,
                                        len(self.class_names))
            except KeyboardInterrupt:  # how a webcam stream ends
                logger.info(f"interrupted; {path} holds the frames so far")
            finally:
                frames.close()
        logger.info(f"wrote {path}")


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="pointrend_seg")
    lazy = is_lazy_config(args.config_file)  # a Python (LazyConfig) file: its model and loaders
    cfg = load_any_config(args.config_file, args.opts)
    if not lazy:
        cfg.freeze()
    view = yaml_view(cfg) if lazy else cfg  # the YAML keys read below
    if not view.MODEL.WEIGHTS:
        raise SystemExit("MODEL.WEIGHTS is empty: give the trained model, e.g. "
                         "MODEL.WEIGHTS output/model_final.pth (Python configs: "
                         "train.init_checkpoint=output/model_final.pth)")
    registered_datasets(args)  # before _jobs: --dataset may be a --register-folder one
    jobs = _jobs(args)
    try:  # before the model is built: a wrong name list must not cost a run
        names, colors, _ = class_names_from_args(view, args,
                                                 [args.dataset] if args.dataset else [])
    except ConfigError as e:
        raise SystemExit(str(e)) from None
    os.makedirs(args.output, exist_ok=True)
    predictor = lazy_predictor(cfg) if lazy else build_predictor(cfg)
    model = getattr(predictor, "model", None)
    if args.show_points and not (isinstance(model, GeneralizedSemanticSegmentor)
                                 and isinstance(model.sem_seg_head, PointRendSegHead)):
        raise SystemExit(
            "--show-points shows PointRend's subdivision: it needs MODEL.META_ARCHITECTURE "
            "GeneralizedSemanticSegmentor with MODEL.SEM_SEG_HEAD.NAME PointRendSegHead (this "
            f"config: {type(model).__name__}, {type(getattr(model, 'sem_seg_head', None)).__name__})")
    max_pixels = (view.INPUT.MAX_IMAGE_PIXELS if args.max_image_pixels is None
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
                demo.video(source)
            except OSError as e:  # OpenCV cannot open the video, the webcam or the output
                if len(jobs) == 1:
                    raise SystemExit(str(e)) from None
                logger.error(f"skipped {source.path}: {e}")
                failed.append((source.path, str(e)))
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
