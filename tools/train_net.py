#!/usr/bin/env python
"""
Train or evaluate a pointrend_seg model with Detectron2's launcher and DefaultTrainer.

    tools/train_net.py --config-file configs/demo/deeplabv3_pointrend_synthetic.yaml
    tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/model_final.pth
    tools/train_net.py --config-file CFG --resume            # continue from OUTPUT_DIR/last_checkpoint
    tools/train_net.py --config-file CFG --num-gpus 8        # one process per GPU (NCCL)
    tools/train_net.py --config-file CFG --num-gpus 2 MODEL.DEVICE cpu   # 2 CPU processes (gloo)

Multi-machine: --num-machines M --machine-rank R --dist-url tcp://HOST:PORT on every machine.

Folder datasets (images + masks paired by file stem; repeatable; CLASSES is comma-separated
names or a text file with one name per line), registered in every process before training:

    tools/train_net.py --config-file CFG --register-folder my_train img/ masks/ bg,road,car \
        DATASETS.TRAIN '("my_train",)' DATASETS.TEST '()' MODEL.SEM_SEG_HEAD.NUM_CLASSES 3
"""
import logging

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup, launch

import pointrend_seg  # noqa: F401  (registers the components)
from pointrend_seg.data.datasets import register_folder_datasets
from pointrend_seg.engine import Trainer, build_config


def setup(args):
    cfg = build_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def argument_parser():
    """Detectron2's default arguments plus ``--register-folder``."""
    parser = default_argument_parser()
    parser.add_argument(
        "--register-folder", action="append", nargs=4, default=[],
        metavar=("NAME", "IMAGE_DIR", "MASK_DIR", "CLASSES"),
        help="register a dataset of images and masks paired by file stem (repeatable); CLASSES: "
        "comma-separated class names or a text file with one name per line",
    )
    return parser


def main(args):
    cfg = setup(args)
    # Here rather than before launch(): main runs in every spawned process.
    register_folder_datasets(getattr(args, "register_folder", None))
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = argument_parser().parse_args()
    logging.getLogger("detectron2").info(f"Command line arguments: {args}")
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
