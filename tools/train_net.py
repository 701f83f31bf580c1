#!/usr/bin/env python
"""
Train or evaluate a pointrend_seg model with Detectron2's launcher, from a YAML config (overrides
KEY VALUE) or a Python (LazyConfig) one (overrides key=value, e.g. train.max_iter=2; a Python
config is code: loading it runs it). Both are read once into the same settings and builders
(pointrend_seg.engine.run_config) and run by the same Trainer, checks and evaluation: everything
below holds for both kinds (Python-config keys: docs/lazyconfig.md).

    tools/train_net.py --config-file configs/demo/deeplabv3_pointrend_synthetic.yaml
    tools/train_net.py --config-file configs/demo/deeplabv3_pointrend_synthetic.py train.max_iter=100
    tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/model_final.pth
    tools/train_net.py --config-file CFG --resume            # continue from OUTPUT_DIR/last_checkpoint
    tools/train_net.py --config-file CFG --num-gpus 8        # one process per GPU (NCCL)
    tools/train_net.py --config-file CFG --num-gpus 2 MODEL.DEVICE cpu   # 2 CPU processes (gloo)

Multi-machine: --num-machines M --machine-rank R --dist-url tcp://HOST:PORT on every machine.

Processes (Detectron2's launch, one process per GPU, or per CPU share with MODEL.DEVICE cpu):

    --num-gpus N        processes on this machine (NCCL with GPUs; gloo for MODEL.DEVICE cpu)
    --num-machines M    machines in the job;  --machine-rank R: this machine, 0 .. M-1
    --dist-url URL      rendezvous of all processes: tcp://HOST:PORT of machine 0, the same on
                        every machine; "auto" picks a free local port (one machine only); the
                        default is a fixed per-user local port

SOLVER.IMS_PER_BATCH is the total over all processes (a multiple of their number). CPU
processes cannot run torch's SyncBatchNorm: "SyncBN" norms then become Detectron2's
"naiveSyncBN" (all-reduced statistics), with a warning. Evaluation splits each test set over the
processes and gathers the results, so it reports the same numbers as one process. Give CPU
processes their share of the cores (e.g. OMP_NUM_THREADS=1 for 2 processes on 2 cores):
oversubscribed OpenMP threads make training many times slower.

Checkpoints (OUTPUT_DIR/model_*.pth every SOLVER.CHECKPOINT_PERIOD iterations, model_final.pth)
are written atomically and hold model, optimizer, LR scheduler, iteration and the seed of the
training stream: --resume after a crash continues from OUTPUT_DIR/last_checkpoint and computes
the same losses as an uninterrupted run; with a fixed SEED two runs (same machine, same thread
count) are identical, whatever DATALOADER.NUM_WORKERS. A checkpoint becomes last_checkpoint once
the next loss, computed with its weights, was finite and no spike; a NaN/inf loss stops the run,
naming the iteration, the losses and that checkpoint (continue with --resume SOLVER.BASE_LR
<lower>). An unreadable latest checkpoint falls back to the previous one (one that holds pickled
objects stops the run instead). Loading runs no code from a file: .pth/.pt files load with
torch.load(weights_only=True), .pkl files (model zoo) with an unpickler that rebuilds numpy arrays
and plain values only; last_checkpoint must name a file of the run folder, not a .pkl
(docs/checkpoints.md). --eval-only refuses weights that leave model tensors uninitialised (missing
or of another shape, e.g. another MODEL.POINT_HEAD.FC_DIM): --partial-weights evaluates them anyway.
SOLVER.LOG_PERIOD: iterations between metric writes.

A run folder has one writer: a second run into an OUTPUT_DIR that a live process trains or
evaluates in is refused, naming that process (a killed run's claim is taken over). --eval-only in a
run folder keeps its config.yaml (what --resume and --run read) and writes eval_config.yaml. A config that
fails a check needing only the config (keys, solver values, precision, optimizer, LR schedule, the
model's keys) stops the start before anything is written there. --resume first
checks that the checkpoint fits this config's model and optimizer, and refuses before writing
anything, naming the tensors and the keys that differ from OUTPUT_DIR/config.yaml. Ctrl-C ends with
one line naming the iteration reached and the checkpoint to continue from (exit status 130).

Errors: a bad config, data file or checkpoint prints one line (train_net.py: error: ...) and exits
2; a run stopped by a non-finite loss or a full disk exits 1 the same way (log.txt keeps the
message, in one line); --debug (before the KEY VALUE overrides) or POINTREND_SEG_DEBUG=1 shows
the traceback.

Folder datasets (images + masks paired by file stem; repeatable; CLASSES is comma-separated
names or a text file with one name per line), registered in every process before training;
--label-map VALUE:ID[,...] and --ignore-value V apply to the --register-folder before them
(e.g. --label-map 255:1 for binary masks saved as 0/255):

    tools/train_net.py --config-file CFG --register-folder my_train img/ masks/ bg,road,car \
        DATASETS.TRAIN '("my_train",)' DATASETS.TEST '()' MODEL.SEM_SEG_HEAD.NUM_CLASSES 3

Dataset check: before training (and --eval-only) every sample of DATASETS.TRAIN and
DATASETS.TEST is read once and checked (tools/check_dataset.py does the same alone); the
reports go to the log and OUTPUT_DIR/dataset_check.json, and problems stop the run, all listed.
--skip-bad (DATASETS.CHECK.SKIP_BAD True) leaves those samples out instead, lists them in
OUTPUT_DIR/skipped_samples.json, and skips samples that fail to load later; without it, such a
failure first saves the last finished iteration as a checkpoint. The check is cached per file
(~/.cache/pointrend_seg/dataset_checks, DATASETS.CHECK.CACHE_DIR): a second start reads nothing.

Own data stated once: configs/folder/deeplabv3_pointrend_folder.{yaml,py} take the number of
classes and the ignore value from the first training set (its class file, --ignore-value).
The run folder describes itself (config.yaml; checkpoints that carry the class names and colours
as model_info): tools/demo.py --run OUTPUT_DIR and tools/export_model.py --run OUTPUT_DIR need
nothing else.
"""
import logging
import sys

import pointrend_seg  # noqa: F401  (first: registers the components, imports Detectron2 quietly)

from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from pointrend_seg.config import load_any_config
from pointrend_seg.engine import Trainer, as_run_config, launch, load_inference_model, prepare_run
from pointrend_seg.engine.run_folder import claim_before_writing, run_config_kept
from pointrend_seg.engine.cli import (
    add_debug_argument,
    add_partial_weights_argument,
    add_register_folder_argument,
    debug_requested,
    overrides_last,
    registered_datasets,
    run_tool,
    setup_tool_output,
    training_errors_in_one_line,
)


def load_config(args):
    """The run's config (YAML: a frozen ``CfgNode``, overrides KEY VALUE; ``.py``: a LazyConfig,
    overrides key=value); writes nothing."""
    python = args.config_file.endswith(".py")
    opts = list(args.opts)
    if getattr(args, "skip_bad", False):
        opts += ["train.dataset_check.skip_bad=True"] if python else \
            ["DATASETS.CHECK.SKIP_BAD", "True"]
    cfg = load_any_config(args.config_file, opts)
    if not python:
        cfg.freeze()
    return cfg


def setup(args, run):
    """Detectron2's ``default_setup`` (logs, ``OUTPUT_DIR/config.yaml``, seeds) and our log; an
    evaluation (``--eval-only``) keeps a run's ``config.yaml`` and writes ``eval_config.yaml``."""
    with run_config_kept(run.settings.OUTPUT_DIR, keep=args.eval_only):
        default_setup(run.config, args)
    setup_logger(run.settings.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="pointrend_seg")


def argument_parser():
    """Detectron2's default arguments plus ``--register-folder`` (with ``--label-map`` and
    ``--ignore-value``), ``--skip-bad`` and ``--partial-weights`` (for ``--eval-only``). Parse
    ``overrides_last(argv)`` with it: flags may then follow the config overrides."""
    parser = add_debug_argument(add_register_folder_argument(default_argument_parser()))
    add_partial_weights_argument(parser)
    parser.add_argument(
        "--skip-bad", action="store_true",
        help="leave out the samples the dataset check finds problems in (listed in "
        "OUTPUT_DIR/skipped_samples.json) instead of stopping; same as DATASETS.CHECK.SKIP_BAD",
    )
    return parser


def main(args):
    training_errors_in_one_line(args.debug or debug_requested())  # in every process
    cfg = load_config(args)
    # Here rather than before launch(): main runs in every spawned process.
    registered_datasets(args)
    run = as_run_config(cfg)  # either kind, read once (a Python config's classes: its dataset)
    # Before anything is written into OUTPUT_DIR: one writer, the checks that need only the
    # config, and a checkpoint that fits.
    claim_before_writing(run, resume=args.resume, train=not args.eval_only)
    setup(args, run)
    if args.eval_only:  # the model and its weights first, then the datasets
        model = load_inference_model(run, resume=args.resume,
                                     partial_weights=args.partial_weights)
        return Trainer.test(run, model, plan=prepare_run(run, train=False))
    trainer = Trainer(run)  # cheap checks and the model first, then every dataset check, once
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    setup_tool_output()
    args = argument_parser().parse_args(overrides_last(sys.argv[1:]))
    logging.getLogger("detectron2").info(f"Command line arguments: {args}")
    sys.exit(run_tool(
        lambda: launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        ),
        prog="train_net.py", debug=args.debug or debug_requested(),
    ))
