"""
Foreground / background segmentation with PointRend: two classes (NUM_CLASSES 2), trained and
evaluated end to end on a generated folder dataset. (Detectron2's PointRend fails on one class,
detectron2#2297; one class is a ConfigError here, tests/test_reliability_config.py.)
"""
import numpy as np
import torch
from PIL import Image

from detectron2.utils.events import EventStorage

from pointrend_seg.data.datasets import register_folder_dataset
from pointrend_seg.engine import Trainer

from conftest import demo_config, torch_threads

SIZE = 64


def _write_disks(folder, num, seed):
    """Images: a noisy coloured disk (random centre and radius) on grey noise; masks 0/1."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True)
    (folder / "mask").mkdir()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in range(num):
        cy, cx = rng.uniform(12, SIZE - 12, 2)
        r = rng.uniform(6, 16)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        image = rng.normal(110, 25, (SIZE, SIZE, 3))
        image[mask == 1] = rng.normal([200, 80, 60], 25, (mask.sum(), 3))
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / "img" / f"{i:03d}.png")
        Image.fromarray(mask).save(folder / "mask" / f"{i:03d}.png")


def test_two_class_pointrend_trains_and_evaluates(tmp_path, prefix):
    names = {}
    for split, num, seed in (("train", 32, 0), ("val", 12, 1)):
        _write_disks(tmp_path / split, num, seed)
        names[split] = register_folder_dataset(
            f"{prefix}_{split}", tmp_path / split / "img", tmp_path / split / "mask",
            ["background", "foreground"],
        )
    cfg = demo_config(
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2",
        "DATASETS.TRAIN", f"('{names['train']}',)", "DATASETS.TEST", f"('{names['val']}',)",
        "INPUT.MIN_SIZE_TRAIN", f"({SIZE},)", "INPUT.MAX_SIZE_TRAIN", str(SIZE),
        "INPUT.MIN_SIZE_TEST", str(SIZE), "INPUT.MAX_SIZE_TEST", str(SIZE),
        "SOLVER.IMS_PER_BATCH", "4", "SOLVER.WARMUP_ITERS", "10",
        "TEST.BOUNDARY_EVAL.ENABLED", "False", "OUTPUT_DIR", str(tmp_path / "out"),
    )
    iterations = 60
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    loader = iter(Trainer.build_train_loader(cfg))
    model.train()
    with EventStorage(0), torch_threads(1):
        for _ in range(iterations):
            losses = model(next(loader))
            assert set(losses) == {"loss_sem_seg", "loss_sem_seg_point"}
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
    model.eval()
    with torch_threads(1):
        results = Trainer.test(cfg, model)["sem_seg"]
    assert {"IoU-background", "IoU-foreground"} <= set(results)
    # Predicting all background gives IoU-foreground 0. Measured after 60 iterations: 83 to 91
    # (3 seeds; 76 / 76 / 14 after 30).
    assert results["IoU-foreground"] > 50.0, results
