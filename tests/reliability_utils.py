"""Helpers of the reliability tests: run tools/train_net.py in a subprocess, read metrics.json."""
import json
import os
import signal
import subprocess
import sys
import time

from conftest import DEMO_CONFIG, REPO_ROOT
import tool_process

TRAIN_NET = os.path.join(REPO_ROOT, "tools", "train_net.py")

# Small and quick: no evaluation, metrics of every iteration written raw (LOG_PERIOD 1).
FAST = [
    "SOLVER.IMS_PER_BATCH", "4", "DATALOADER.NUM_WORKERS", "0", "TEST.BOUNDARY_EVAL.ENABLED",
    "False", "DATASETS.TEST", "()", "SOLVER.LOG_PERIOD", "1",
]


def train_net_cmd(*args):
    return [sys.executable, TRAIN_NET, "--config-file", DEMO_CONFIG, *args]


def _env(threads):
    env = dict(os.environ)
    # One thread per process: on 2 shared cores, torch's OpenMP threads waiting for a thread
    # that another process displaced can make an iteration ~50x slower.
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_train_net(*args, threads=1, timeout=600, expect_failure=False):
    """Run train_net.py to completion; return its output (asserting success, or failure)."""
    proc = tool_process.run(train_net_cmd(*args), cwd=REPO_ROOT, timeout=timeout,
                            env=_env(threads))
    assert (proc.returncode != 0) == expect_failure, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


def read_metrics(output_dir, offset=0):
    """{iteration: training metrics} from OUTPUT_DIR/metrics.json, from byte ``offset`` on."""
    path = os.path.join(output_dir, "metrics.json")
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read().decode()
    ret = {}
    for line in data.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        if "total_loss" in entry:
            ret[entry["iteration"]] = entry
    return ret


def losses(metrics, names=("loss_sem_seg", "loss_sem_seg_point", "total_loss")):
    return {it: {k: m[k] for k in names} for it, m in sorted(metrics.items())}


def run_and_kill(args, kill_when, log_path, *, threads=1, timeout=300):
    """
    Start train_net.py with ``args`` and SIGKILL it as soon as ``kill_when()`` is true (polled
    every 20 ms). The run must still be alive then (its SOLVER.MAX_ITER is set far away).
    """
    with open(log_path, "w") as log:
        proc = subprocess.Popen(train_net_cmd(*args), stdout=log, stderr=subprocess.STDOUT,
                                cwd=REPO_ROOT, env=_env(threads))
        deadline = time.monotonic() + timeout
        try:
            while not kill_when():
                if proc.poll() is not None:
                    raise AssertionError(
                        f"train_net.py exited ({proc.returncode}) before it was to be killed:\n"
                        + open(log_path).read()[-6000:]
                    )
                if time.monotonic() > deadline:
                    raise AssertionError("timeout:\n" + open(log_path).read()[-6000:])
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
    return proc.returncode




def thread_count():
    """OS threads of this process (Linux)."""
    return len(os.listdir("/proc/self/task"))


def collect_then_leave(out_dir):
    """
    Run in each process of a 2-process launch: collectives as Detectron2 runs them, then
    leave_process_group(); writes what a process looks like before and after leaving.
    """
    import torch.distributed as dist
    from detectron2.utils import comm

    from pointrend_seg.engine.distributed import leave_process_group

    rank = comm.get_rank()
    comm.all_gather({"rank": rank})
    comm.synchronize()
    before = thread_count()
    leave_process_group()
    after = thread_count()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"before": before, "after": after, "initialized": dist.is_initialized()}, f)
