"""
Samples that fail during training (changed on disk after the dataset check, decoder errors):
skipped and logged with their file when DATASETS.CHECK.SKIP_BAD, otherwise the last finished
iteration is saved first; a run resumed from that checkpoint logs the metrics (windowed
medians) of the uninterrupted run.
"""
import json
import logging
import os
import shutil

import pytest

from detectron2.data.common import DatasetFromList
from detectron2.utils.env import seed_all_rng

from pointrend_seg.data import BadInputError
from pointrend_seg.data.datasets import register_folder_dataset
from pointrend_seg.engine import ResumableTrainingSampler, Trainer
from pointrend_seg.engine.train_data import ResumableTrainLoader

from bad_dataset import CLASSES, write_binary_folder
from conftest import demo_config, torch_threads


class _FailingMapper:
    """Returns the file name; raises BadInputError for the files in ``bad``."""

    def __init__(self, bad):
        self.bad = set(bad)

    def __call__(self, d):
        if d["file_name"] in self.bad:
            raise BadInputError(f"cannot read image file {d['file_name']}: broken",
                                "unreadable image", d["file_name"])
        return d["file_name"]


def _first_batches(skip_bad, bad, n=6):
    dicts = [{"file_name": f"img{i}.png"} for i in range(5)]
    sampler = ResumableTrainingSampler(5, total_batch_size=2, seed=7, rank=0, world_size=1)
    loader = ResumableTrainLoader(DatasetFromList(dicts, copy=False), _FailingMapper(bad),
                                  sampler, skip_bad=skip_bad)
    stream = iter(loader)
    return [next(stream) for _ in range(n)]


def test_failing_sample_is_skipped_and_logged_when_skipping(caplog):
    clean = _first_batches(True, bad=())
    with caplog.at_level(logging.WARNING):
        skipped = _first_batches(True, bad={"img2.png"})
    # Every batch keeps its size; img2 is replaced by the next image of the dataset.
    assert [len(b) for b in skipped] == [2] * 6
    expected = [["img3.png" if f == "img2.png" else f for f in batch] for batch in clean]
    assert skipped == expected
    assert "Skipping training sample img2.png" in caplog.text and "broken" in caplog.text
    # Without skipping the error propagates, naming the file.
    with pytest.raises(BadInputError, match="img2.png"):
        _first_batches(False, bad={"img2.png"})


def _metrics(path, offset=0):
    with open(path, "rb") as f:
        f.seek(offset)
        lines = f.read().decode().splitlines()
    return {e["iteration"]: e for e in map(json.loads, lines) if "total_loss" in e}


LOSSES = ("total_loss", "loss_sem_seg", "loss_sem_seg_point")


def test_data_error_saves_the_last_iteration_and_resume_continues_the_metrics(tmp_path, prefix):
    images, masks = write_binary_folder(str(tmp_path / "data"), 12, size=64, seed=4)
    name = register_folder_dataset(f"{prefix}_train", images, masks, CLASSES,
                                   label_map={255: 1})

    def trainer_for(out):
        # LOG_PERIOD 2: metrics written at iterations 1, 3, 5 as medians of 2 iterations, so the
        # window of iteration 3 holds iteration 2 from before the crash.
        cfg = demo_config(
            "OUTPUT_DIR", str(out), "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2", "INPUT.MIN_SIZE_TRAIN", "(64,)",
            "INPUT.MAX_SIZE_TRAIN", "64", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "6",
            "SOLVER.WARMUP_ITERS", "2", "SOLVER.CHECKPOINT_PERIOD", "100",
            "SOLVER.LOG_PERIOD", "2", "DATALOADER.NUM_WORKERS", "0",
            "DATASETS.CHECK.CACHE_DIR", str(tmp_path / "cache"),
        )
        seed_all_rng(0)  # the same initial weights in each run (train_net: default_setup)
        return Trainer(cfg)

    with torch_threads(1):
        reference = trainer_for(tmp_path / "reference")
        reference.resume_or_load(resume=False)
        reference.train()
        expected = _metrics(tmp_path / "reference" / "metrics.json")
        assert sorted(expected) == [1, 3, 5]

        out = tmp_path / "crashed"
        trainer = trainer_for(out)
        trainer.resume_or_load(resume=False)
        # An image of iteration 3 breaks after the dataset check passed.
        sampler = trainer.data_loader.sampler
        index = sampler.index(sampler.positions(3)[0])
        broken = trainer.data_loader._stream.dataset[index]["file_name"]
        shutil.copy(broken, tmp_path / "backup.png")
        with open(broken, "wb") as f:
            f.write(b"garbage")
        with pytest.raises(BadInputError, match=os.path.basename(broken)):
            trainer.train()
        # The state after iteration 2 was saved, and --resume will take it.
        with open(out / "last_checkpoint") as f:
            assert f.read() == "model_0000002.pth"
        offset = os.path.getsize(out / "metrics.json")

        shutil.copy(tmp_path / "backup.png", broken)  # fixed
        resumed = trainer_for(out)
        resumed.resume_or_load(resume=True)
        assert resumed.start_iter == 3
        resumed.train()
    after = _metrics(out / "metrics.json", offset)
    assert sorted(after) == [3, 5]
    # Same losses as the uninterrupted run, medians over the same windows (iteration 3's
    # window holds iteration 2, logged before the crash).
    for it in (3, 5):
        assert {k: after[it][k] for k in LOSSES} == {k: expected[it][k] for k in LOSSES}
        assert after[it]["lr"] == expected[it]["lr"]
