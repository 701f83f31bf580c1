"""
A run folder has one writer, and ``--resume`` checks its checkpoint before writing anything
(issue 24; before: two runs into one OUTPUT_DIR both exited 0 with the second's checkpoints over
the first's, a resume with another FC_DIM / DEPTH / OPTIMIZER / NUM_CLASSES was a traceback at
the first step after config.yaml had been rewritten, and Ctrl-C printed 38 lines).
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
import types

import pytest
import torch

from detectron2.modeling import build_model

from pointrend_seg.config import ConfigError
from pointrend_seg.engine import SafeCheckpointer, Trainer
from pointrend_seg.engine.checkpoint import CheckpointReadError
from pointrend_seg.engine.optimizer import build_optimizer
from pointrend_seg.engine.run_folder import (
    LOCK_NAME,
    ResumeMismatchError,
    RunFolderBusyError,
    claim_before_writing,
    claim_run_folder,
    config_differences,
    run_config_kept,
)

from conftest import REPO_ROOT, demo_config
import tool_process
from reliability_utils import FAST, _env, run_train_net, train_net_cmd


def _wait_for(condition, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"exited early ({proc.returncode})"
        assert time.monotonic() < deadline, "timeout"
        time.sleep(0.05)


def _folder_state(folder):
    """{name: bytes} of every file of a run folder but the lock file."""
    return {name: open(os.path.join(folder, name), "rb").read()
            for name in sorted(os.listdir(folder)) if name != LOCK_NAME}


def test_second_run_into_a_busy_folder_is_refused_and_ctrl_c_names_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    first_log = tmp_path / "first.log"
    with open(first_log, "w") as log:
        first = subprocess.Popen(
            train_net_cmd(*FAST, "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "1000",
                          "SOLVER.CHECKPOINT_PERIOD", "2"),
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=_env(1),
            # Ctrl-C's default disposition in the run, also when this suite was started in the
            # background by a non-interactive shell (which starts it with SIGINT ignored, a
            # setting children inherit: then the run rightly ignores Ctrl-C).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            # Training, with a confirmed checkpoint (kept once the next loss was finite).
            _wait_for(lambda: (out / "last_checkpoint").exists(), first)
            state = _folder_state(out)
            second = tool_process.run(
                train_net_cmd(*FAST, "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "2"),
                cwd=REPO_ROOT, env=_env(1), timeout=300)
            assert second.returncode == 2, second.stderr[-3000:]
            last = second.stderr.strip().splitlines()[-1]
            assert last.startswith(f"train_net.py: error: OUTPUT_DIR {out} is in use by process "
                                   f"{first.pid} on "), last
            assert "Traceback" not in second.stderr
            # The second run wrote nothing: same files, same bytes (the first may have added).
            now = _folder_state(out)
            assert all(now[name] == data for name, data in state.items()
                       if name in ("config.yaml", "dataset_check.json"))
            first.send_signal(signal.SIGINT)  # Ctrl-C
            first.wait(timeout=120)
        finally:
            if first.poll() is None:
                first.kill()
    output = first_log.read_text()
    assert first.returncode == 130, output[-3000:]
    assert "Traceback" not in output
    last = output.strip().splitlines()[-1]
    named = (out / "last_checkpoint").read_text()
    assert last.startswith("train_net.py: interrupted at iteration "), last
    assert last.endswith(f"of 1000; continue from {out / named} with --resume"), last
    # The folder is free again: not "in use", but its checkpoints are only continued.
    log = run_train_net(*FAST, "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "2",
                        expect_failure=True)
    assert f"train_net.py: error: OUTPUT_DIR {out} holds the checkpoints of an earlier run" in log


def test_a_claim_of_a_killed_process_is_taken_over(tmp_path):
    # The holder forks a child that outlives it, as a DataLoader worker of a run killed with -9
    # does for a while: the child must not keep the folder locked (CI once failed on this).
    holder = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time\n"
         "from pointrend_seg.engine.run_folder import claim_run_folder\n"
         f"claim_run_folder({str(tmp_path)!r})\n"
         "child = os.fork()\n"
         "if child == 0: time.sleep(60); os._exit(0)\n"
         "print('held', child, flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    child = None
    try:
        word, child = holder.stdout.readline().split()
        assert word == "held"
        with pytest.raises(RunFolderBusyError, match=f"in use by process {holder.pid} on "):
            claim_run_folder(str(tmp_path))
        holder.send_signal(signal.SIGKILL)  # kill -9: the kernel drops its lock
        holder.wait()
        claim = claim_run_folder(str(tmp_path))  # while the forked child still lives
        os.kill(int(child), 0)
        assert claim.previous["pid"] == holder.pid  # recognised, taken over
        assert json.loads(open(tmp_path / LOCK_NAME).read())["pid"] == os.getpid()
        claim.release()
    finally:
        if holder.poll() is None:
            holder.kill()
        if child is not None:
            try:
                os.kill(int(child), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _run_folder(tmp_path, *opts, layout="train_net"):
    """A run folder after a checkpoint: config.yaml, model_0000001.pth (model + optimizer of the
    demo config with ``opts``) and last_checkpoint. ``layout``: where the optimizer state is -
    "train_net" (our Trainer's, as DefaultTrainer's: trainer._trainer.optimizer), "simple"
    (Detectron2's SimpleTrainer, lazyconfig_train_net.py: trainer.optimizer) or "plain"
    (plain_train_net.py's optimizer checkpointable: optimizer)."""
    out = tmp_path / "run"
    cfg = demo_config("OUTPUT_DIR", str(out), *opts)
    if layout == "train_net":
        Trainer(cfg).checkpointer.save("model_0000001", iteration=1)
    else:
        model = build_model(cfg)
        optimizer = build_optimizer(cfg, model)
        state = types.SimpleNamespace(state_dict=lambda: {"iteration": 1,
                                                          "optimizer": optimizer.state_dict()})
        parts = {"trainer": state} if layout == "simple" else {"optimizer": optimizer}
        SafeCheckpointer(model, str(out), **parts).save("model_0000001", iteration=1)
    (out / "config.yaml").write_text(cfg.dump())
    return out


@pytest.mark.parametrize("opts, key, tensor", [
    (["MODEL.POINT_HEAD.FC_DIM", "128"], "MODEL.POINT_HEAD.FC_DIM (64 in the run's config.yaml, "
     "128 now)", "sem_seg_head.point_head."),
    (["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "7"], "MODEL.SEM_SEG_HEAD.NUM_CLASSES (5 in the run's "
     "config.yaml, 7 now)", "sem_seg_head.coarse_head.predictor.weight: checkpoint (5, 64, 1, "
     "1), model (7, 64, 1, 1)"),
    (["MODEL.RESNETS.DEPTH", "101"], "MODEL.RESNETS.DEPTH (50 in the run's config.yaml, 101 "
     "now)", "not in the checkpoint"),
    (["SOLVER.OPTIMIZER", "SGD"], "SOLVER.OPTIMIZER ('ADAMW' in the run's config.yaml, 'SGD' "
     "now)", "optimizer: Adam-type in the checkpoint, SGD here"),
])
def test_resume_with_another_model_is_refused_before_writing(tmp_path, opts, key, tensor):
    out = _run_folder(tmp_path)  # the optimizer state where tools/train_net.py writes it
    cfg = demo_config("OUTPUT_DIR", str(out), *opts)
    with pytest.raises(ResumeMismatchError) as info:
        claim_before_writing(cfg, resume=True)
    message = str(info.value)
    assert message.startswith(f"cannot resume from {out / 'model_0000001.pth'}: ")
    assert key in message and tensor in message
    assert f"--config-file {out / 'config.yaml'}" in message
    claim_run_folder(str(out)).release()
    # The same config resumes; without --resume nothing is compared, and the folder's
    # checkpoints are not replaced (test_a_new_training_never_replaces_checkpoints).
    claim_before_writing(demo_config("OUTPUT_DIR", str(out)), resume=True)


def test_resume_fit_is_checked_on_the_file_the_resume_falls_back_to(tmp_path):
    """The newest checkpoint cannot be read: the resume falls back to the earlier one, and that
    one is the file checked (before: the check skipped an unreadable file, config.yaml was
    replaced and the run ended in a size-mismatch traceback after fvcore's 'Skip loading')."""
    out = _run_folder(tmp_path)
    (out / "model_0000002.pth").write_bytes((out / "model_0000001.pth").read_bytes()[:1000])
    (out / "last_checkpoint").write_text("model_0000002.pth")
    cfg = demo_config("OUTPUT_DIR", str(out), "MODEL.POINT_HEAD.FC_DIM", "128")
    with pytest.raises(ResumeMismatchError) as info:
        claim_before_writing(cfg, resume=True)
    assert str(info.value).startswith(f"cannot resume from {out / 'model_0000001.pth'}: ")
    assert "MODEL.POINT_HEAD.FC_DIM (64 in the run's config.yaml, 128 now)" in str(info.value)
    claim_run_folder(str(out)).release()
    # the run's own config resumes (from model_0000001.pth, with the warning at the load)
    claim_before_writing(demo_config("OUTPUT_DIR", str(out)), resume=True)
    claim_run_folder(str(out)).release()
    # nothing readable at all: the resume's own error, before anything is written
    (out / "model_0000001.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointReadError, match=f"{out / 'last_checkpoint'} names it and no "
                       "earlier checkpoint"):
        claim_before_writing(demo_config("OUTPUT_DIR", str(out)), resume=True)


@pytest.mark.parametrize("tag, why", [
    (b" " * 5000 + b"model_0000001.pth", "over 4096 bytes"),
    (bytes(range(128, 256)) * 20, "not UTF-8 text"),
])
def test_a_last_checkpoint_that_is_no_name_is_one_error_for_check_and_load(tmp_path, tag, why):
    """The tag is read one way, bounded, by the check and the load (before: the check read 4096
    characters and found nothing, fvcore read all and resumed unchecked; a tag that is not UTF-8
    was a UnicodeDecodeError traceback after config.yaml had been replaced)."""
    out = _run_folder(tmp_path)
    (out / "last_checkpoint").write_bytes(tag)
    message = f"{out / 'last_checkpoint'} does not hold the name of a checkpoint ({why})"
    cfg = demo_config("OUTPUT_DIR", str(out), "MODEL.POINT_HEAD.FC_DIM", "128")
    with pytest.raises(CheckpointReadError, match=re.escape(message)):
        claim_before_writing(cfg, resume=True)
    checkpointer = Trainer(demo_config("OUTPUT_DIR", str(out))).checkpointer
    with pytest.raises(CheckpointReadError, match=r"does not hold the name of a checkpoint"):
        checkpointer.resume_or_load("", resume=True)


@pytest.mark.parametrize("layout", ["simple", "plain"])
def test_resume_with_another_optimizer_is_refused_in_detectron2_layouts(tmp_path, layout):
    """Checkpoints of Detectron2's own training scripts keep the optimizer elsewhere (before:
    only the top-level one was compared, so a run folder of tools/train_net.py resumed with
    another SOLVER.OPTIMIZER ended in a KeyError traceback at the first step)."""
    out = _run_folder(tmp_path, layout=layout)
    with pytest.raises(ResumeMismatchError, match="optimizer: Adam-type in the checkpoint, SGD"):
        claim_before_writing(demo_config("OUTPUT_DIR", str(out), "SOLVER.OPTIMIZER", "SGD"),
                             resume=True)


@pytest.mark.parametrize("layout", ["train_net", "simple", "plain"])
def test_resume_accepts_the_training_state_of_each_layout(tmp_path, layout):
    """Our Trainer's (DefaultTrainer's) checkpoints, SimpleTrainer's (trainer.iteration) and
    plain_train_net.py's (top-level iteration and optimizer) hold a state to continue, and the
    resume restores it (before: plain_train_net.py's restarted at iteration 1 with a fresh
    optimizer)."""
    out = _run_folder(tmp_path, layout=layout)
    path = out / "model_0000001.pth"
    data = torch.load(path, weights_only=True)
    state = data if layout == "plain" else data["trainer"]
    state["iteration"] = 7  # (ours: 0, a trainer that never trained)
    optimizer = state.get("_trainer", state)["optimizer"]
    optimizer["param_groups"][0]["weight_decay"] = 0.123  # a mark
    torch.save(data, path)
    cfg = demo_config("OUTPUT_DIR", str(out), "DATASETS.TEST", "()")
    claim_before_writing(cfg, resume=True)
    claim_run_folder(str(out)).release()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 8
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.123


def test_a_checkpoint_without_training_state_is_refused_before_writing(tmp_path):
    """last_checkpoint names a file of model weights only (e.g. copied in): before, --resume
    started at iteration 1 with a fresh optimizer and the whole schedule, exit 0."""
    out = _run_folder(tmp_path)
    path = out / "model_0000001.pth"
    torch.save({"model": torch.load(path, weights_only=True)["model"]}, path)
    before = _folder_state(out)
    proc = tool_process.run(train_net_cmd("--resume", *FAST, "OUTPUT_DIR", str(out)),
                            cwd=REPO_ROOT, env=_env(1), timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"train_net.py: error: cannot resume from {path}: it holds model "
                           "weights but no training state (iteration, optimizer)"), last
    assert f"MODEL.WEIGHTS {path}" in last and f"train.init_checkpoint={path}" in last
    assert _folder_state(out) == before  # config.yaml, checkpoint, last_checkpoint; no log.txt
    # an evaluation of the run folder needs its weights only
    claim_before_writing(demo_config("OUTPUT_DIR", str(out)), resume=True, train=False)


def test_an_evaluation_keeps_the_run_config_even_when_stopped(tmp_path):
    """--eval-only keeps a run folder's config.yaml (before: Detectron2's default_setup replaced
    it with the evaluation's); the evaluation's goes to eval_config.yaml. Stopped while
    default_setup writes, the run's file is aside and the folder's next claim puts it back."""
    (tmp_path / "config.yaml").write_text("run")

    def default_setup(text, fail=False):
        (tmp_path / "config.yaml").write_text(text)  # as Detectron2 writes it: in place
        if fail:
            raise KeyboardInterrupt

    with run_config_kept(str(tmp_path), keep=True):
        default_setup("evaluation")
    assert (tmp_path / "config.yaml").read_text() == "run"
    assert (tmp_path / "eval_config.yaml").read_text() == "evaluation"
    with run_config_kept(str(tmp_path), keep=False):  # training writes its config.yaml
        default_setup("training")
    assert (tmp_path / "config.yaml").read_text() == "training"
    with pytest.raises(KeyboardInterrupt), run_config_kept(str(tmp_path), keep=True):
        default_setup("another evaluation", fail=True)
    assert (tmp_path / "config.yaml").read_text() == "training"

    # killed (-9) inside: nothing runs after the rename; the next claim puts the file back
    os.replace(tmp_path / "config.yaml", tmp_path / "config.yaml.kept")
    (tmp_path / "config.yaml").write_text("half an evaluation config")
    claim_run_folder(str(tmp_path)).release()
    assert (tmp_path / "config.yaml").read_text() == "training"
    assert not (tmp_path / "config.yaml.kept").exists()


def test_config_differences_ignore_what_yaml_makes_of_tuples():
    """config.yaml holds lists where the config holds (nested) tuples: not a difference (before:
    every resume message named MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS)."""
    saved = {"MODEL": {"W": [[10.0, 5.0], [20.0, 10.0]], "D": 50}}
    assert config_differences(saved, {"MODEL": {"W": ((10.0, 5.0), (20.0, 10.0)), "D": 50}}) == []
    assert config_differences(saved, {"MODEL": {"W": ((10.0, 5.0),), "D": 101}}) == [
        "MODEL.D (50 in the run's config.yaml, 101 now)",
        "MODEL.W ([[10.0, 5.0], [20.0, 10.0]] in the run's config.yaml, ((10.0, 5.0),) now)"]


@pytest.mark.parametrize("opts, message", [
    (["--resume", "MODEL.POINT_HEAD.FC_DIM", "128"], "cannot resume from {out}/model_0000001.pth"),
    # Checks that need only the config, before config.yaml is written (before: a failed start
    # replaced the run's config.yaml; the unknown schedule was a ValueError traceback).
    (["SOLVER.OPTIMIZER", "ADAMM"], "SOLVER.OPTIMIZER must be 'SGD' or 'ADAMW', got 'ADAMM'"),
    (["--resume", "SOLVER.LR_SCHEDULER_NAME", "WarmupPoly"],
     "SOLVER.LR_SCHEDULER_NAME='WarmupPoly' is not a schedule Detectron2 knows (did you mean "
     "'WarmupPolyLR'?)"),
    (["--eval-only", "MODEL.POINT_HEAD.NUM_FC", "-1"], "MODEL.POINT_HEAD.NUM_FC=-1 must be an "
     "integer >= 0"),
    # before: a ValueError traceback / a bare AssertionError (exit 1) after config.yaml was
    # replaced
    (["SEED", "4294967296"], "SEED=4294967296 must be an integer <= 4294967295"),
    (["DATASETS.TRAIN", "()"], "DATASETS.TRAIN is empty: training needs at least one dataset"),
])
def test_train_net_start_that_fails_changes_nothing_in_the_run_folder(tmp_path, opts, message):
    out = _run_folder(tmp_path)
    before = _folder_state(out)
    proc = tool_process.run(train_net_cmd(*opts, *FAST, "OUTPUT_DIR", str(out)),
                            cwd=REPO_ROOT, env=_env(1), timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train_net.py: error: " + message.format(out=out)), last
    if "MODEL.POINT_HEAD.FC_DIM" in opts:
        assert "MODEL.POINT_HEAD.FC_DIM (64 in the run's config.yaml, 128 now)" in last
    assert _folder_state(out) == before  # config.yaml, checkpoint, last_checkpoint; no log.txt


def test_a_new_training_never_replaces_checkpoints(tmp_path):
    """Training starts into a folder with checkpoints only with --resume and a last_checkpoint
    (before: without --resume model_final.pth, config.yaml and last_checkpoint were replaced
    without a word and the other run's model_<iter>.pth stayed for a later fallback; with
    --resume but no last_checkpoint Detectron2 trained from scratch over every checkpoint)."""
    out = _run_folder(tmp_path)
    (out / "model_final.pth").write_bytes((out / "model_0000001.pth").read_bytes())
    before = _folder_state(out)
    cfg = demo_config("OUTPUT_DIR", str(out))
    with pytest.raises(ConfigError, match=re.escape(
            f"OUTPUT_DIR {out} holds the checkpoints of an earlier run (model_final.pth, "
            "model_0000001.pth), which a new training would replace. Continue that run with "
            "--resume, or give this run another OUTPUT_DIR")):
        claim_before_writing(cfg, resume=False)
    claim_run_folder(str(out)).release()
    os.remove(out / "last_checkpoint")
    with pytest.raises(ConfigError, match=re.escape(
            f"--resume: OUTPUT_DIR {out} holds checkpoints (model_final.pth, model_0000001.pth) "
            "but no last_checkpoint naming the one to continue from, so training would start "
            f"from scratch and replace them. Write the file name of the checkpoint to continue "
            f"from into {out / 'last_checkpoint'} (e.g. model_final.pth)")):
        claim_before_writing(cfg, resume=True)
    claim_run_folder(str(out)).release()
    # an evaluation writes no checkpoint (it is refused only for having no weights to load)
    claim_before_writing(demo_config("OUTPUT_DIR", str(out), "MODEL.WEIGHTS",
                                     str(out / "model_final.pth")), resume=True, train=False)
    claim_run_folder(str(out)).release()
    del before["last_checkpoint"]
    assert _folder_state(out) == before
    # a folder with a run's log but no checkpoint (e.g. its dataset check failed) trains
    empty = tmp_path / "failed_start"
    empty.mkdir()
    (empty / "log.txt").write_text("a start that failed")
    claim_before_writing(demo_config("OUTPUT_DIR", str(empty)), resume=False)


def test_train_net_into_a_finished_run_changes_nothing(tmp_path):
    out = _run_folder(tmp_path)
    before = _folder_state(out)
    proc = tool_process.run(train_net_cmd(*FAST, "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(out)),
                            cwd=REPO_ROOT, env=_env(1), timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"train_net.py: error: OUTPUT_DIR {out} holds the checkpoints of an "
                           "earlier run (model_0000001.pth)"), last
    assert _folder_state(out) == before


@pytest.mark.parametrize("name", [LOCK_NAME, "config.yaml", "metrics.json", "log.txt",
                                  "model_final.pth", "inference"])
def test_symbolic_links_in_a_run_folder_are_refused_before_writing(tmp_path, name):
    """Before: a link under a name the tools write made training truncate, replace or append to
    its target outside the folder (exit 0)."""
    out, victim = tmp_path / "run", tmp_path / "victim"
    out.mkdir()
    victim.write_text("not yours")
    os.symlink(victim, out / name)
    with pytest.raises(ConfigError, match=re.escape(
            f"OUTPUT_DIR {out}: {out / name} is a symbolic link (to {victim}); the tools write "
            "the files of a run folder in place")):
        claim_run_folder(str(out))
    assert victim.read_text() == "not yours"
    assert sorted(os.listdir(out)) == [name]  # no lock file either
    os.remove(out / name)
    os.symlink(victim, out / "my_notes.txt")  # a name the tools never write
    claim_run_folder(str(out)).release()


def test_a_run_folder_that_cannot_be_used_names_the_key(tmp_path):
    """Before: FileExistsError / PermissionError / IsADirectoryError tracebacks (exit 1), and for
    an empty OUTPUT_DIR "[Errno 2] No such file or directory: ''" without the key."""
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=re.escape(
            f"OUTPUT_DIR {a_file} is a file, not a folder")):
        claim_before_writing(demo_config("OUTPUT_DIR", str(a_file)), resume=False)
    (tmp_path / "run" / LOCK_NAME).mkdir(parents=True)
    with pytest.raises(ConfigError, match=re.escape(
            f"OUTPUT_DIR {tmp_path / 'run'}: cannot use it as the run folder: Is a directory: "
            f"{tmp_path / 'run' / LOCK_NAME}")):
        claim_run_folder(str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="train.output_dir .*: cannot use it as the run folder: "
                       "Not a directory"):
        claim_run_folder(str(a_file / "run"), "train.output_dir")
    with pytest.raises(ConfigError, match="^OUTPUT_DIR is empty: training writes"):
        claim_before_writing(demo_config("OUTPUT_DIR", ""), resume=False)
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ConfigError, match="cannot use it as the run folder: Permission denied"):
            claim_run_folder(str(locked / "run"))
