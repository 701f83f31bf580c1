"""
PointRend on Detectron2 ``main``'s backbones and trainer (run in ``make test-d2main``; on v0.6
the transformer configs say in one error that they need ``main``):

* Detectron2's own ``tools/lazyconfig_train_net.py``, unmodified (from the ``main`` source
  snapshot the installer extracted), trains our demo LazyConfig 2 iterations and evaluates it,
  and our ``tools/train_net.py --resume`` continues that run;
* the tiny ViT + SimpleFeaturePyramid + PointRend demo trains a few iterations and predicts any
  input size;
* the Swin and MViTv2 configs instantiate (tiny widths) and predict; the full-size optimizers
  apply their projects' learning-rate decay / weight-decay rules.
"""
import glob
import os
import sys

import pytest
import torch

import detectron2.modeling
from detectron2.config import instantiate

from pointrend_seg import model_zoo
from pointrend_seg.config import ConfigError

from conftest import REPO_ROOT, torch_threads
import tool_process

ON_MAIN = hasattr(detectron2.modeling, "ViT")
main_only = pytest.mark.skipif(not ON_MAIN, reason="Detectron2 main only (v0.6 has no ViT)")
TRANSFORMER_CONFIGS = [c for c in model_zoo.list_configs("py")
                       if any(b in c for b in ("vit", "swin", "mvit"))]


@pytest.mark.skipif(ON_MAIN, reason="Detectron2 v0.6 only")
@pytest.mark.parametrize("name", TRANSFORMER_CONFIGS)
def test_transformer_configs_need_main_on_v06(name):
    with pytest.raises(ConfigError, match="of Detectron2's main branch; the installed"):
        model_zoo.get_config(name)


def _lazyconfig_train_net():
    found = glob.glob(os.path.join(REPO_ROOT, ".cache", "build-archive", "detectron2-main-*",
                                   "tools", "lazyconfig_train_net.py"))
    return found[0] if found else None


@main_only
@pytest.mark.slow
def test_detectron2_lazyconfig_train_net_trains_and_evaluates_our_demo(tmp_path):
    script = _lazyconfig_train_net()
    if script is None:
        pytest.skip("Detectron2 main's tools/lazyconfig_train_net.py was not extracted "
                    "(make setup-d2main extracts the snapshot)")
    config = model_zoo.get_config_file("demo/deeplabv3_pointrend_synthetic.py")
    proc = tool_process.run(
        [sys.executable, script, "--config-file", config, "train.max_iter=2",
         f"train.output_dir={tmp_path}", "dataloader.train.total_batch_size=2"],
        cwd=str(tmp_path), timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "copypaste: mIoU,fwIoU,mACC,pACC" in log and "copypaste: mBF,mBIoU" in log
    assert (tmp_path / "model_final.pth").exists()
    # Our train_net.py continues that run: its optimizer state (SimpleTrainer's layout) is read
    # and compared, the stream goes on at iteration 2.
    proc = tool_process.run(
        [sys.executable, os.path.join(REPO_ROOT, "tools", "train_net.py"), "--config-file",
         config, "--resume", "train.max_iter=3", f"train.output_dir={tmp_path}",
         "dataloader.train.total_batch_size=2", "train.eval_period=0"],
        cwd=str(tmp_path), timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "Resuming training at iteration 2" in log and "no optimizer state" not in log


@main_only
def test_vit_demo_trains_and_predicts_any_size():
    cfg = model_zoo.get_config("demo/vit_pointrend_synthetic.py",
                               ["dataloader.train.total_batch_size=2"])
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    batches = iter(instantiate(cfg.dataloader.train))
    losses = []
    with torch_threads(1):
        for _ in range(3):
            loss = sum(model(next(batches)).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        model.eval()
        with torch.no_grad():
            for h, w in [(128, 128), (97, 131), (200, 64)]:
                out = model([{"image": torch.rand(3, h, w) * 255}])[0]["sem_seg"]
                assert out.shape == (5, h, w) and torch.isfinite(out).all()
    assert all(torch.isfinite(torch.tensor(losses)))
    assert type(model.sem_seg_head).__name__ == "PointRendSegHead"
    assert model.sem_seg_head.in_features == ["p2"]


@main_only
@pytest.mark.parametrize("name, backbone, coarse_channels, fine", [
    ("cityscapes/swin_t_pointrend.py", dict(embed_dim=24, depths=[1, 1, 1, 1],
                                            num_heads=[1, 2, 3, 6]), 96, 24),
    ("ade20k/mvitv2_t_pointrend.py", dict(embed_dim=16, depth=4, last_block_indexes=(0, 1, 2, 3),
                                          drop_path_rate=0.0), 64, 16),
])
def test_swin_and_mvit_configs_instantiate_and_predict(name, backbone, coarse_channels, fine):
    cfg = model_zoo.get_config(name)
    cfg.model.backbone.update(backbone)  # tiny widths for a CPU test; the rest as configured
    head = cfg.model.sem_seg_head
    head.coarse_head.input_shape.channels = coarse_channels
    head.coarse_head.norm = "BN"  # SyncBN needs several GPU processes
    head.point_head.in_channels = fine
    model = instantiate(cfg.model).eval()
    with torch.no_grad(), torch_threads(1):
        for h, w in [(64, 96), (77, 50)]:
            out = model([{"image": torch.rand(3, h, w) * 255}])[0]["sem_seg"]
            assert out.shape == (head.coarse_head.num_classes, h, w)


@main_only
def test_vit_b_optimizer_has_the_layer_wise_lr_decay():
    cfg = model_zoo.get_config("cityscapes/vit_b_pointrend.py")
    cfg.model.backbone.net.update(embed_dim=48, num_heads=4, img_size=128)  # 12 blocks kept
    cfg.model.backbone.out_channels = 32
    cfg.model.sem_seg_head.coarse_head.input_shape.channels = 32
    cfg.model.sem_seg_head.point_head.in_channels = 32
    model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    lrs = {group["lr"] for group in optimizer.param_groups}
    # 0.7 ** (13 - layer): the first blocks learn at a fraction of the head's 1e-4
    assert max(lrs) == pytest.approx(1e-4) and min(lrs) == pytest.approx(1e-4 * 0.7 ** 13)
    no_decay = [g for g in optimizer.param_groups if g["weight_decay"] == 0.0]
    assert any(p is model.backbone.net.pos_embed for g in no_decay for p in g["params"])


@main_only
@pytest.mark.parametrize("name", TRANSFORMER_CONFIGS)
def test_transformer_run_folders_read_back_for_demo_and_export(name, tmp_path):
    """The config.yaml that Detectron2's LazyConfig.save writes for a transformer config is plain
    YAML (norm layers and LR factors are LazyCall nodes, not functools.partial objects, which it
    wrote as Python tags that --run refused), and reads back as the same config; the tiny ViT
    demo's run folder draws with tools/demo.py --run."""
    from detectron2.config import LazyConfig
    from omegaconf import OmegaConf

    from pointrend_seg.engine.run_folder import load_run_folder

    cfg = model_zoo.get_config(name)
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    assert not (tmp_path / "config.yaml.pkl").exists()
    assert "!!python" not in (tmp_path / "config.yaml").read_text()
    read, weights = load_run_folder(str(tmp_path), weights="w.pth")
    assert weights == "w.pth"
    assert OmegaConf.to_container(read) == OmegaConf.to_container(
        OmegaConf.create(LazyConfig.load(str(tmp_path / "config.yaml"))))
    if name != "demo/vit_pointrend_synthetic.py":
        return
    import demo

    torch.manual_seed(0)
    torch.save({"model": instantiate(read.model).state_dict()}, tmp_path / "model_final.pth")
    with torch_threads(1):
        assert demo.main(["--run", str(tmp_path), "--dataset", "synthetic_shapes_sem_seg_val",
                          "--num-images", "1", "--output", str(tmp_path / "pictures"),
                          "train.device=cpu"]) == 0
    assert os.listdir(tmp_path / "pictures") == ["0000.png"]
