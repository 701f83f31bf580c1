"""Checkpoints: atomic saves survive an interrupted write; .pth/.pt load with weights_only."""
import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from pointrend_seg.engine import SafeCheckpointer, UnsafeCheckpointError
from pointrend_seg.engine import checkpoint as checkpoint_module


def _model(value):
    model = nn.Linear(3, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def _files(directory):
    return sorted(os.listdir(directory))


def _interrupted_save(monkeypatch):
    """Make torch.save write part of the file and then fail, like a crash mid-write."""
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.seek(0)
        f.truncate(100)
        raise RuntimeError("simulated crash while writing")

    monkeypatch.setattr(torch, "save", save_half_then_fail)


def _load_last(directory):
    """A fresh checkpointer reads OUTPUT_DIR/last_checkpoint and loads it (what --resume does)."""
    model = _model(0.0)
    checkpointer = SafeCheckpointer(model, str(directory))
    assert checkpointer.has_checkpoint()
    extra = checkpointer.resume_or_load("", resume=True)
    return model, extra, checkpointer.get_checkpoint_file()


def test_interrupted_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    SafeCheckpointer(_model(1.0), str(tmp_path)).save("model_0000009", iteration=9)
    before = _files(tmp_path)
    assert before == ["last_checkpoint", "model_0000009.pth"]

    _interrupted_save(monkeypatch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        SafeCheckpointer(_model(2.0), str(tmp_path)).save("model_0000019", iteration=19)
    monkeypatch.undo()

    # No partial model_0000019.pth, no temporary file left, last_checkpoint unchanged ...
    assert _files(tmp_path) == before
    with open(tmp_path / "last_checkpoint") as f:
        assert f.read() == "model_0000009.pth"
    # ... and the previous checkpoint loads.
    model, extra, path = _load_last(tmp_path)
    assert path.endswith("model_0000009.pth") and extra["iteration"] == 9
    assert torch.all(model.weight == 1.0)


def test_interrupted_overwrite_keeps_old_content(tmp_path, monkeypatch):
    """model_final.pth is saved again on every resumed run: a failed rewrite keeps the old one."""
    SafeCheckpointer(_model(1.0), str(tmp_path)).save("model_final", iteration=5)
    _interrupted_save(monkeypatch)
    with pytest.raises(RuntimeError):
        SafeCheckpointer(_model(2.0), str(tmp_path)).save("model_final", iteration=7)
    monkeypatch.undo()
    model, extra, _ = _load_last(tmp_path)
    assert extra["iteration"] == 5 and torch.all(model.weight == 1.0)
    assert _files(tmp_path) == ["last_checkpoint", "model_final.pth"]


def test_interrupted_tag_update_keeps_previous_tag(tmp_path, monkeypatch):
    """A crash between writing a checkpoint and updating last_checkpoint: the old tag holds."""
    SafeCheckpointer(_model(1.0), str(tmp_path)).save("model_0000009", iteration=9)
    real_replace = os.replace

    def replace(src, dst):
        if os.path.basename(dst) == "last_checkpoint":
            raise OSError("simulated crash before the rename")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", replace)
    with pytest.raises(OSError, match="simulated crash"):
        SafeCheckpointer(_model(2.0), str(tmp_path)).save("model_0000019", iteration=19)
    monkeypatch.undo()
    # The new checkpoint is complete, but not tagged; the tag still names a loadable one.
    assert _files(tmp_path) == ["last_checkpoint", "model_0000009.pth", "model_0000019.pth"]
    _, extra, path = _load_last(tmp_path)
    assert path.endswith("model_0000009.pth") and extra["iteration"] == 9


def test_stale_temp_files_are_removed(tmp_path):
    checkpointer = SafeCheckpointer(_model(1.0), str(tmp_path))
    checkpointer.save("model_0000009")
    # A temporary file of a process that died mid-save (pid 2**22 + 1 is above Linux's maximum)
    # and one of a live process (ours), which must be kept.
    dead = tmp_path / f".model_0000019.pth.tmp.{2 ** 22 + 1}.0123abcd"
    alive = tmp_path / f".model_0000029.pth.tmp.{os.getpid()}.0123abcd"
    dead.write_bytes(b"partial")
    alive.write_bytes(b"in progress")
    assert checkpointer.remove_stale_temp_files() == [str(dead)]
    assert alive.exists() and not dead.exists()


def test_disabled_saving_writes_nothing(tmp_path):
    checkpointer = SafeCheckpointer(_model(1.0), str(tmp_path))
    checkpointer.disable_saving("test")
    checkpointer.save("model_0000000")
    assert _files(tmp_path) == []


# ---- weights_only loading -------------------------------------------------------------------
SIDE_EFFECT = []


def _side_effect(arg):
    SIDE_EFFECT.append(arg)
    return arg


class _Payload:
    """An object whose unpickling calls a function: what weights_only loading must refuse."""

    def __reduce__(self):
        return (_side_effect, ("code ran",))


@pytest.mark.parametrize("ext", [".pth", ".pt"])
def test_pickled_object_is_refused(tmp_path, ext):
    path = str(tmp_path / f"weights{ext}")
    torch.save({"model": _model(1.0).state_dict(), "payload": _Payload()}, path)
    SIDE_EFFECT.clear()
    model = _model(0.0)
    with pytest.raises(UnsafeCheckpointError) as info:
        SafeCheckpointer(model).load(path)
    assert path in str(info.value) and "weights_only" in str(info.value)
    assert "docs/checkpoints.md" in str(info.value)
    assert SIDE_EFFECT == []  # nothing was executed
    assert torch.all(model.weight == 0.0)  # and nothing loaded


@pytest.mark.parametrize("wrapped", [True, False], ids=["checkpoint", "bare_state_dict"])
def test_plain_weights_load(tmp_path, wrapped):
    state = _model(3.0).state_dict()
    path = str(tmp_path / "weights.pth")
    torch.save({"model": state, "iteration": 4} if wrapped else state, path)
    model = _model(0.0)
    SafeCheckpointer(model).load(path)
    assert torch.all(model.weight == 3.0) and torch.all(model.bias == 3.0)


def test_pkl_goes_through_detectron2_reader(tmp_path):
    """.pkl (model-zoo format) is unpickled by Detectron2's reader: trusted files only."""
    path = str(tmp_path / "weights.pkl")
    weights = {k: v.numpy() for k, v in _model(4.0).state_dict().items()}
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "test"}, f)
    model = _model(0.0)
    SafeCheckpointer(model).load(path)
    assert np.allclose(model.weight.detach().numpy(), 4.0)


def test_trainer_checkpoints_load_weights_only(tmp_path):
    """What the Trainer saves (model, optimizer, scheduler, iteration, data stream) needs no
    pickled objects: it loads with weights_only=True."""
    from detectron2.engine import hooks

    from conftest import demo_config
    from pointrend_seg.engine import Trainer

    cfg = demo_config("OUTPUT_DIR", str(tmp_path), "DATALOADER.NUM_WORKERS", "0",
                      "DATASETS.TEST", "()", "SOLVER.IMS_PER_BATCH", "2")
    trainer = Trainer(cfg)
    periodic = [h for h in trainer._hooks if isinstance(h, hooks.PeriodicCheckpointer)]
    assert len(periodic) == 1 and isinstance(periodic[0].checkpointer, SafeCheckpointer)
    assert periodic[0].checkpointer is trainer.checkpointer
    trainer.checkpointer.save("model_test", iteration=0)
    data = torch.load(str(tmp_path / "model_test.pth"), weights_only=True)
    assert set(data["trainer"]) >= {"iteration", "hooks", "_trainer", "data"}
    assert "optimizer" in data["trainer"]["_trainer"]
    assert data["trainer"]["data"]["seed"] == cfg.SEED


def test_ctrl_c_during_a_save_stays_a_ctrl_c_and_leaves_the_earlier_file(tmp_path):
    """A KeyboardInterrupt inside torch.save's zip writer made its clean-up raise
    "RuntimeError: ... unexpected pos" over it: a Ctrl-C during a checkpoint ended the run with
    that traceback and exit 1 instead of the one-line stop (exit 130; seen in CI's Ctrl-C test).
    atomic_write raises the KeyboardInterrupt itself; the earlier file stays, no temp file."""
    import io

    from pointrend_seg.files import atomic_write

    class InterruptedFile(io.RawIOBase):  # Ctrl-C arrives during the third write
        def __init__(self, f):
            self.f, self.writes = f, 0

        def writable(self):
            return True

        def write(self, data):
            self.writes += 1
            if self.writes == 3:
                raise KeyboardInterrupt
            return self.f.write(data)

    path = tmp_path / "model_0000001.pth"
    path.write_bytes(b"earlier")
    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), lambda f: torch.save({"w": torch.zeros(100, 100)},
                                                     InterruptedFile(f)))
    assert os.listdir(tmp_path) == ["model_0000001.pth"] and path.read_bytes() == b"earlier"
