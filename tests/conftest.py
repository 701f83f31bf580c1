"""
Shared fixtures. ``trained_demo_model`` trains the CPU demo model once per test session (in
process, ~1.5 minutes on 2 cores) for tests that need a model whose predictions are not
near-ties everywhere.
"""
import contextlib
import os
import sys
import uuid

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The tools' helper packages (tools/benchmarks) are importable by tests as by the tools.
sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))
DEMO_CONFIG = os.path.join(REPO_ROOT, "configs", "demo", "deeplabv3_pointrend_synthetic.yaml")
# Iterations of the session-scoped demo model (the full demo uses SOLVER.MAX_ITER of the YAML).
FIXTURE_TRAIN_ITERS = 200


@contextlib.contextmanager
def torch_threads(n):
    """Run torch in this process with ``n`` intra-op threads, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def randomize_norm_stats(model, generator):
    """
    Norm parameters and BN running statistics that are not the identity (so that a mismatch in a
    comparison shows), drawn from ``generator``: batch norms (also SyncBatchNorm and Detectron2's
    FrozenBatchNorm2d) and group norms.
    """
    from detectron2.layers import FrozenBatchNorm2d

    for m in model.modules():
        if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
        elif isinstance(m, torch.nn.GroupNorm):
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end test (runs tools or trains a model)")


@pytest.fixture(scope="module")
def one_intra_op_thread():
    """
    One torch thread for a module's tests: on a CPU shared with other processes, the OpenMP
    workers of 2+ threads wait on each other and small ops get 10-50x slower. Results do not
    depend on the thread count.
    """
    with torch_threads(1):
        yield


@pytest.fixture
def prefix():
    """A unique dataset-name prefix; every dataset registered under it is removed afterwards."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    prefix = f"test_ds_{uuid.uuid4().hex[:8]}"
    yield prefix
    for catalog in (DatasetCatalog, MetadataCatalog):
        for name in list(catalog.list()):
            if name.startswith(prefix):
                catalog.remove(name)


@pytest.fixture(scope="session")
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope="session")
def python_exe():
    return sys.executable


def demo_config(*opts):
    """The demo config with ``KEY VALUE`` overrides (not frozen)."""
    from pointrend_seg.config import build_config

    return build_config(DEMO_CONFIG, list(opts))


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory):
    """A checkpoint of the demo model with random weights (seed 0): for the tools, which refuse
    to run a model without weights, where the test is not about what the model predicts."""
    from detectron2.modeling import build_model

    path = tmp_path_factory.mktemp("weights") / "random.pth"
    torch.manual_seed(0)
    torch.save({"model": build_model(demo_config()).state_dict()}, path)
    return str(path)


@pytest.fixture(scope="session")
def trained_demo_model(tmp_path_factory):
    """
    (cfg, model): the demo model trained for FIXTURE_TRAIN_ITERS iterations, in eval mode; its
    weights are also saved as ``cfg.OUTPUT_DIR/model_final.pth``.
    """
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.utils.events import EventStorage

    from pointrend_seg.engine import Trainer

    out = tmp_path_factory.mktemp("trained_demo")
    cfg = demo_config(
        "SOLVER.MAX_ITER", str(FIXTURE_TRAIN_ITERS), "OUTPUT_DIR", str(out),
        "DATALOADER.NUM_WORKERS", "0",
    )
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    scheduler = Trainer.build_lr_scheduler(cfg, optimizer)
    loader = iter(Trainer.build_train_loader(cfg))
    model.train()
    # Modules that use one_intra_op_thread may request this fixture: training uses every core.
    with EventStorage(0), torch_threads(os.cpu_count() or 1):
        for _ in range(FIXTURE_TRAIN_ITERS):
            loss = sum(model(next(loader)).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    DetectionCheckpointer(model, save_dir=str(out)).save("model_final")
    return cfg, model


def write_folder_split(root, split, n, rng, void=None):
    """A folder dataset split under ``root/split``: ``n`` 64x48 images (``images/``, PNG) and
    masks (``masks/``) of 3 classes in bands (0 | 1 | 2), the top 4 rows ``void`` if given;
    the images follow their labels. Returns (images, masks) folders."""
    import numpy as np
    from PIL import Image

    images, masks = root / split / "images", root / split / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for i in range(n):
        label = np.zeros((48, 64), np.uint8)
        label[:, 20:40] = 1
        label[30:, :] = 2
        if void is not None:
            label[:4] = void
        image = np.stack([label % 3 * 80 + rng.integers(0, 40, label.shape)] * 3, -1)
        Image.fromarray(image.astype(np.uint8)).save(images / f"{split}{i}.png")
        Image.fromarray(label).save(masks / f"{split}{i}.png")
    return images, masks
