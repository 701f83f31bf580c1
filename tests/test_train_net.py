"""End-to-end: tools/train_net.py trains, evaluates from the checkpoint (--eval-only), resumes."""
import json
import os
import sys

import pytest
import torch

from conftest import DEMO_CONFIG, REPO_ROOT
import tool_process

FAST = [
    "SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_WORKERS", "0", "SOLVER.WARMUP_ITERS", "2",
]


def run_train_net(*args):
    cmd = [sys.executable, os.path.join(REPO_ROOT, "tools", "train_net.py"), "--config-file",
           DEMO_CONFIG, *args]
    proc = tool_process.run(cmd, cwd=REPO_ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def read_json(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.slow
def test_train_eval_only_and_resume(tmp_path):
    out = str(tmp_path / "run")
    log = run_train_net("SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2",
                        "OUTPUT_DIR", out, *FAST)
    assert "mIoU =" in log and "boundary F =" in log
    trained = read_json(os.path.join(out, "eval_results.json"))
    assert set(trained) == {"sem_seg", "sem_seg_boundary"}
    assert 0.0 <= trained["sem_seg"]["mIoU"] <= 100.0
    final = os.path.join(out, "model_final.pth")
    assert torch.load(final, weights_only=False)["iteration"] == 3

    # --eval-only on the final checkpoint, in the run's folder, reproduces the evaluation at the
    # end of training (the flag after the overrides, as the other tools take it) and keeps the
    # run's config.yaml (before: replaced by the evaluation's, which --run and --resume read).
    eval_out = out
    with open(os.path.join(out, "config.yaml"), "rb") as f:
        run_config = f.read()
    log = run_train_net("MODEL.WEIGHTS", final, "OUTPUT_DIR", eval_out, *FAST, "--eval-only")
    with open(os.path.join(out, "config.yaml"), "rb") as f:
        assert f.read() == run_config
    with open(os.path.join(out, "eval_config.yaml"), encoding="utf-8") as f:
        assert f"WEIGHTS: {final}" in f.read()
    evaluated = read_json(os.path.join(eval_out, "eval_results.json"))
    # ... with the per-class table in the log and the pictures next to the results.
    assert "synthetic_shapes_sem_seg_val, per class (%):" in log
    table = log[log.index("per class (%):"):].splitlines()[1:7]
    assert table[0].split()[0] == "class" and [r.split()[0] for r in table[1:]] == [
        "background", "blob", "ring", "stroke", "polygon"]
    folder = os.path.join(eval_out, "inference", "synthetic_shapes_sem_seg_val")
    for name in ("confusion_matrix.csv", "confusion_matrix.png", "per_class.png"):
        assert os.path.getsize(os.path.join(folder, name)) > 0, name
    assert evaluated["sem_seg"]["mIoU"] == pytest.approx(trained["sem_seg"]["mIoU"], abs=1e-6)
    assert evaluated["sem_seg_boundary"]["mBF"] == pytest.approx(
        trained["sem_seg_boundary"]["mBF"], abs=1e-6
    )

    # --resume continues from the last checkpoint (iteration 3) to the new MAX_ITER.
    log = run_train_net("--resume", "SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "100",
                        "OUTPUT_DIR", out, "TEST.BOUNDARY_EVAL.ENABLED", "False", *FAST)
    assert "Loading checkpoint from" in log and "model_final.pth" in log
    assert torch.load(final, weights_only=False)["iteration"] == 5
    with open(os.path.join(out, "metrics.json")) as f:
        iterations = [json.loads(line).get("iteration") for line in f]
    assert iterations.count(5) >= 1 and 4 not in iterations[: iterations.index(3) + 1]


def test_flags_after_the_overrides_and_an_override_without_value():
    """train_net.py keeps Detectron2's parser (overrides: nargs=REMAINDER) and moves the
    overrides after the flags first (before: "OUTPUT_DIR out --resume" was an "odd length"
    AssertionError traceback); a YAML override without a value is one ConfigError."""
    import train_net

    from pointrend_seg.config import ConfigError, build_config
    from pointrend_seg.engine.cli import overrides_last

    parse = lambda argv: train_net.argument_parser().parse_args(overrides_last(argv))  # noqa
    args = parse(["--config-file", "c.yaml", "OUTPUT_DIR", "out", "--resume", "SOLVER.BASE_LR",
                  "-0.1", "--num-gpus", "2"])
    assert args.resume and args.num_gpus == 2 and args.config_file == "c.yaml"
    assert args.opts == ["OUTPUT_DIR", "out", "SOLVER.BASE_LR", "-0.1"]
    # a dataset named like a top-level node of the config (TEST) is no override
    args = parse(["--register-folder", "TEST", "i", "m", "a,b", "SEED", "3", "--resume"])
    assert args.register_folder == [["TEST", "i", "m", "a,b"]] and args.opts == ["SEED", "3"]
    args = parse(["--config-file", "c.py", "train.max_iter=2", "--eval-only", "+train.x=1"])
    assert args.eval_only and args.opts == ["train.max_iter=2", "+train.x=1"]
    with pytest.raises(ConfigError, match="the overrides are KEY VALUE pairs; 'OUTPUT_DIR' has no "
                                          "value"):
        build_config(DEMO_CONFIG, ["SOLVER.MAX_ITER", "2", "OUTPUT_DIR"])
