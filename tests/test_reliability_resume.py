"""
Crash and resume, end to end: a run SIGKILLed after a checkpoint resumes with --resume and its
losses after the checkpoint equal those of an uninterrupted run; two seeded runs are identical.

All runs use the demo config (2 images per iteration) with the poly LR schedule over
SOLVER.MAX_ITER 1000 (so that the test, not the schedule, ends them), a checkpoint every 3
iterations, one loader worker (worker seeding matters) and raw per-iteration metrics
(SOLVER.LOG_PERIOD 1).
"""
import os

import pytest
import torch

from reliability_utils import FAST, losses, read_metrics, run_and_kill

LAST_ITER = 6  # the uninterrupted reference runs up to here
ARGS = [*FAST, "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "1000",
        "SOLVER.CHECKPOINT_PERIOD", "3", "DATALOADER.NUM_WORKERS", "1", "SEED", "1"]


def _logged(out, at_least, offset=0):
    return lambda: max(read_metrics(out, offset), default=-1) >= at_least


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The reference run, the crashed run (before and after --resume) and their output dirs."""
    tmp = tmp_path_factory.mktemp("resume")
    ref, crashed = str(tmp / "reference"), str(tmp / "crashed")
    run_and_kill([*ARGS, "OUTPUT_DIR", ref], _logged(ref, LAST_ITER), str(tmp / "ref.log"))
    reference = read_metrics(ref)

    # Killed mid-training once the checkpoint of iteration 2 exists and iteration 3 is logged.
    tag = os.path.join(crashed, "last_checkpoint")
    run_and_kill([*ARGS, "OUTPUT_DIR", crashed],
                 lambda: os.path.exists(tag) and _logged(crashed, 3)(), str(tmp / "crash.log"))
    before_crash = read_metrics(crashed)
    with open(tag) as f:
        checkpoint = f.read().strip()
    # The checkpoint named by last_checkpoint is complete (the kill may hit a later save).
    ckpt_iter = torch.load(os.path.join(crashed, checkpoint), weights_only=True)["iteration"]

    offset = os.path.getsize(os.path.join(crashed, "metrics.json"))
    resume_log = str(tmp / "resume.log")
    run_and_kill(["--resume", *ARGS, "OUTPUT_DIR", crashed],
                 _logged(crashed, max(LAST_ITER, ckpt_iter + 3), offset), resume_log)
    after_resume = read_metrics(crashed, offset)
    with open(resume_log) as f:
        log = f.read()
    return {"reference": reference, "before_crash": before_crash, "after_resume": after_resume,
            "ckpt_iter": ckpt_iter, "resume_log": log}


@pytest.mark.slow
def test_killed_run_resumes_with_the_uninterrupted_losses(runs):
    ckpt_iter, after = runs["ckpt_iter"], runs["after_resume"]
    assert ckpt_iter in (2, 5)
    assert f"Resuming training at iteration {ckpt_iter + 1}" in runs["resume_log"]
    # The resumed run starts right after the checkpoint ...
    assert min(after) == ckpt_iter + 1
    compared = [it for it in after if it <= LAST_ITER]
    assert len(compared) >= 2
    # ... and its losses are exactly those of the uninterrupted run (same model, optimizer,
    # scheduler, data and RNG state at every iteration).
    assert losses({it: after[it] for it in compared}) == losses(
        {it: runs["reference"][it] for it in compared}
    )
    lrs = [after[it]["lr"] for it in compared]
    assert lrs == [runs["reference"][it]["lr"] for it in compared]


@pytest.mark.slow
def test_seeded_runs_are_identical(runs):
    """The reference run and the crashed run (before the crash) have the same config and SEED."""
    before, reference = runs["before_crash"], runs["reference"]
    common = sorted(set(before) & set(reference))
    assert common[:4] == [0, 1, 2, 3]
    assert losses({it: before[it] for it in common}) == losses(
        {it: reference[it] for it in common}
    )
    # Not trivially equal: the loss moves over these iterations.
    totals = [reference[it]["total_loss"] for it in common]
    assert max(totals) - min(totals) > 1e-3
