#!/usr/bin/env python
"""
Run a trained model on images and write prediction overlays (PNG).

    tools/demo.py --config-file CFG --input a.jpg b.png --output out/ MODEL.WEIGHTS model.pth
    tools/demo.py --config-file CFG --dataset synthetic_shapes_sem_seg_val --num-images 4 \
        --output out/ MODEL.WEIGHTS model.pth     # prediction | ground truth, side by side
"""
import argparse
import logging
import os

import numpy as np
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.utils.logger import setup_logger

import pointrend_seg  # noqa: F401
from pointrend_seg.data import read_image_file, read_label_file
from pointrend_seg.config import build_config
from pointrend_seg.visualization import draw_sem_seg_overlay


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--input", nargs="+", default=[], help="image files")
    p.add_argument("--dataset", help="a registered dataset to take images (and labels) from")
    p.add_argument("--num-images", type=int, default=4)
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return p.parse_args()


def main():
    args = parse_args()
    setup_logger(name="pointrend_seg")
    logger = logging.getLogger("pointrend_seg")
    cfg = build_config(args.config_file, args.opts)
    cfg.freeze()
    predictor = DefaultPredictor(cfg)
    if args.dataset:
        items = [(d["file_name"], d.get("sem_seg_file_name"))
                 for d in DatasetCatalog.get(args.dataset)[: args.num_images]]
        metadata = MetadataCatalog.get(args.dataset)
    else:
        items = [(f, None) for f in args.input]
        metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    if not items:
        raise SystemExit("nothing to do: give --input files or --dataset")
    os.makedirs(args.output, exist_ok=True)
    for image_path, label_path in items:
        image_bgr = read_image_file(image_path, "BGR")
        labels = predictor(image_bgr)["sem_seg"].argmax(dim=0).cpu().numpy()
        gt = read_label_file(label_path) if label_path else None
        overlay = draw_sem_seg_overlay(image_bgr[:, :, ::-1], labels, metadata, gt_labels=gt)
        out = os.path.join(args.output, os.path.splitext(os.path.basename(image_path))[0] + ".png")
        Image.fromarray(overlay).save(out)
        logger.info(f"wrote {out}")


if __name__ == "__main__":
    main()
