"""
LazyConfig twins: every shipped YAML model has a Python (LazyConfig) twin that builds the same
model - the same state-dict keys and shapes, and, with the same weights, the same outputs - and
the Python configs load through pointrend_seg.model_zoo and the tools' one config loader.
"""
import json
import os

import pytest
import torch

from detectron2.config import instantiate
from detectron2.modeling import build_model

from pointrend_seg import model_zoo
from pointrend_seg.config import ConfigError
from pointrend_seg.config import load_any_config

from conftest import randomize_norm_stats

YAML_MODELS = [c for c in model_zoo.list_configs() if "Base-" not in c]


def test_every_yaml_model_has_a_python_twin():
    twins = set(model_zoo.list_configs(kind="py"))
    assert {y[:-len(".yaml")] + ".py" for y in YAML_MODELS} <= twins


@pytest.mark.parametrize("name", YAML_MODELS)
def test_twin_builds_the_same_model(name, one_intra_op_thread):
    # the folder configs take classes and ignore value from the dataset: here given
    own = name.startswith("folder/")
    yaml_model = build_model(model_zoo.get_config(name, ["MODEL.DEVICE", "cpu"] + [
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "11"] * own
    )).eval()
    lazy_cfg = model_zoo.get_config(name[:-len(".yaml")] + ".py", [
        "dataset.num_classes=3", "dataset.ignore_value=11"] * own)
    lazy_model = instantiate(lazy_cfg.model).eval()
    ours, theirs = yaml_model.state_dict(), lazy_model.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    # the same weights: the same logits (and the same modules, so exactly)
    randomize_norm_stats(yaml_model, torch.Generator().manual_seed(0))
    lazy_model.load_state_dict(yaml_model.state_dict())
    image = torch.rand(3, 67, 90, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        expected = yaml_model([{"image": image}])[0]["sem_seg"]
        got = lazy_model([{"image": image}])[0]["sem_seg"]
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_python_configs_load_through_the_model_zoo_and_the_tools_loader():
    path = model_zoo.get_config_file("demo/deeplabv3_pointrend_synthetic.py")
    cfg = load_any_config(path, ["train.max_iter=3", "train.output_dir=somewhere"])
    assert cfg.train.max_iter == 3 and cfg.train.output_dir == "somewhere"
    assert cfg.dataloader.train.total_batch_size == 8
    with pytest.raises(ConfigError, match="key=value"):
        load_any_config(path, ["SOLVER.MAX_ITER", "3"])
    # YAML stays a CfgNode; the demo twins are seeded as the YAML demo is (Detectron2's
    # default_setup seeds from train.seed; unset, every run would differ)
    assert load_any_config(model_zoo.get_config_file("demo/deeplabv3_synthetic.yaml")).SEED == 1
    for name in ("demo/deeplabv3_synthetic.py", "demo/deeplabv3_pointrend_synthetic.py"):
        assert model_zoo.get_config(name).train.seed == 1
    # the folder twin's classes: one value (dataset.num_classes, else its dataset's metadata)
    folder = model_zoo.get_config("folder/deeplabv3_pointrend_folder.py", [
        "dataset.num_classes=3", "dataset.ignore_value=11"])
    model = instantiate(folder.model)
    assert model.sem_seg_head.ignore_value == 11
    assert instantiate(folder.dataloader.train.mapper).ignore_label == 11
    assert model.sem_seg_head.coarse_head.predictor.out_channels == 3
    assert model.sem_seg_head.point_head.predictor.out_channels == 3
    assert instantiate(folder.dataloader.test.mapper).num_classes == 3
    assert os.path.basename(path) == "deeplabv3_pointrend_synthetic.py"


def _train(cfg, resume=False):
    """What tools/train_net.py does with a Python config: the one Trainer."""
    from detectron2.utils.env import seed_all_rng

    from pointrend_seg.engine import Trainer

    seed_all_rng(cfg.train.seed)  # as Detectron2's default_setup: the model's initial weights
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return trainer


@pytest.mark.parametrize("override, expected", [
    # a typo: omegaconf would add the key and run the default 800 iterations
    ("train.max_iters=2", "unknown key train.max_iters: train has no key 'max_iters' "
                          "(did you mean train.max_iter?)"),
    # a key the head does not take (its classes are the coarse head's): where the name exists
    ("model.sem_seg_head.num_classes=11", "model.sem_seg_head has no key 'num_classes' (did you "
                                          "mean dataloader.train.mapper.num_classes or "),
    ("trian.max_iter=3", "the config has no key 'trian' (did you mean train?)"),
    ("train.max_iter=abc", "train.max_iter='abc': the key holds a number value (800), not a str"),
    ("train.max_iter=[1", "overrides ['train.max_iter=[1'] of "),  # hydra's grammar: one line
    # hydra's deletion: Detectron2's apply_overrides raised NotImplementedError (a traceback)
    ("~train.eval_period=0", "~train.eval_period: deleting a key is not supported"),
])
def test_python_config_overrides_are_checked_like_yaml_keys(override, expected):
    path = model_zoo.get_config_file("demo/deeplabv3_pointrend_synthetic.py")
    with pytest.raises(ConfigError) as error:
        load_any_config(path, [override])
    assert expected in str(error.value)
    # arguments the config leaves at their default are still keys: the target's signature
    cfg = load_any_config(path, ["model.sem_seg_head.point_loss_weight=2.0", "optimizer.lr=0.1"])
    assert cfg.model.sem_seg_head.point_loss_weight == 2.0 and cfg.optimizer.lr == 0.1


def test_a_train_setting_the_run_would_ignore_is_refused_also_in_a_config_file(tmp_path):
    """A key of ``train`` that the run does not read - Detectron2's checkpointer.max_to_keep, a
    typo - set in the user's own config file (not an override) is one error naming it (before:
    ignored silently); the shipped config passes."""
    from pointrend_seg.engine import as_run_config

    shipped = model_zoo.get_config_file("demo/deeplabv3_pointrend_synthetic.py")
    as_run_config(load_any_config(shipped))
    own = tmp_path / "own.py"
    own.write_text(f"from detectron2.config import LazyConfig\n"
                   f"globals().update(LazyConfig.load({shipped!r}))\n"
                   "train.checkpointer.max_to_keep = 3\ntrain.eval_periode = 10\n")
    with pytest.raises(ConfigError) as error:
        as_run_config(load_any_config(str(own)))
    # train.ddp goes to DistributedDataParallel as it is: any of its arguments is read
    cfg = load_any_config(shipped)
    cfg.train.ddp.gradient_as_bucket_view = True
    assert as_run_config(cfg).ddp_options()["gradient_as_bucket_view"] is True
    assert str(error.value) == (
        "train.checkpointer.max_to_keep: not a setting of pointrend_seg's runs (it would be "
        "ignored) (did you mean train.checkpointer.period?); train.eval_periode: not a setting "
        "of pointrend_seg's runs (it would be ignored) (did you mean train.eval_period?)")


def test_demo_takes_a_python_config_and_its_weights(tmp_path):
    """tools/demo.py draws with a Python config and a checkpoint of its model (--weights, or
    train.init_checkpoint=); tools/train_net.py's training of Python configs is
    test_one_run_path.py's."""
    import demo

    config = model_zoo.get_config_file("demo/deeplabv3_pointrend_synthetic.py")
    torch.manual_seed(0)
    weights = tmp_path / "model.pth"
    model = instantiate(model_zoo.get_config("demo/deeplabv3_pointrend_synthetic.py").model)
    torch.save({"model": model.state_dict()}, weights)
    for way in (["--weights", str(weights)], [f"train.init_checkpoint={weights}"]):
        pictures = tmp_path / way[0][:7].strip("-=.")
        assert demo.main(["--config-file", config, "--dataset", "synthetic_shapes_sem_seg_val",
                          "--num-images", "1", "--output", str(pictures), *way]) == 0
        assert os.listdir(pictures) == ["0000.png"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
def test_python_config_divergence_names_a_checkpoint_that_a_lower_lr_resumes_from(tmp_path):
    """A Python config trained by our tools gets the YAML trainer's protection (before:
    Detectron2's SimpleTrainer, whose checkpoints of blown-up weights --resume went back to):
    far too high a learning rate stops with NonFiniteLossError naming a checkpoint whose weights
    gave a finite loss, and --resume from it with a lower learning rate trains on."""
    from pointrend_seg.engine import NonFiniteLossError

    def train(max_iter, lr, resume):
        cfg = load_any_config(
            model_zoo.get_config_file("demo/deeplabv3_pointrend_synthetic.py"),
            [f"train.max_iter={max_iter}", f"train.output_dir={tmp_path}",
             "train.checkpointer.period=1", "dataloader.train.total_batch_size=2",
             "dataloader.train.num_workers=0", f"optimizer.lr={lr}"])
        cfg.lr_multiplier.warmup_length = 0.0  # no warmup: the first update uses lr
        return _train(cfg, resume=resume)

    train(3, 0.002, resume=False)  # a healthy start: checkpoints 0, 1, 2 (final)
    with pytest.raises(NonFiniteLossError) as info:
        train(12, 1e6, resume=True)
    named = (tmp_path / "last_checkpoint").read_text()
    assert f"The last good state is {tmp_path / named}" in str(info.value)
    assert torch.load(tmp_path / named, weights_only=True)["iteration"] <= 3
    trainer = train(12, 0.002, resume=True)
    assert trainer.iter == 12 and (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    final = torch.load(tmp_path / "model_final.pth", weights_only=True)
    # the YAML runs' layout (docs/checkpoints.md): one trainer, one layout
    assert final["iteration"] == 11 and "optimizer" in final["trainer"]["_trainer"]
    assert all(torch.isfinite(v).all() for v in final["model"].values() if v.is_floating_point())


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
def test_python_config_run_checks_its_datasets_first_and_skips_bad_samples(tmp_path, prefix):
    """A Python config run gets the YAML runs' start-of-run dataset check (before: the first bad
    sample stopped training mid-run): every problem listed with its file before anything is
    built; with skip_bad (--skip-bad) the bad samples are left out of the loaders and it trains."""
    from bad_dataset import BAD_KINDS, CLASSES, write_bad_folder
    from pointrend_seg.data import DatasetCheckError
    from pointrend_seg.data.datasets import register_folder_dataset

    images, masks, bad_files = write_bad_folder(str(tmp_path / "bad"), num_good=4, size=64)
    name = f"{prefix}_bad"
    register_folder_dataset(name, images, masks, CLASSES)

    def train(out, skip_bad):
        cfg = load_any_config(
            model_zoo.get_config_file("folder/deeplabv3_pointrend_folder.py"),
            ["train.max_iter=2", f"train.output_dir={out}",
             f"dataloader.train.dataset.names=[{name}]", f"dataloader.test.dataset.names=[{name}]",
             "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
             "dataloader.test.num_workers=0", "train.device=cpu",
             f"train.dataset_check.skip_bad={skip_bad}"])
        return _train(cfg)

    with pytest.raises(DatasetCheckError) as info:
        train(tmp_path / "refused", skip_bad=False)
    assert f"{len(BAD_KINDS)} problem(s)" in str(info.value)
    for stem, kind in BAD_KINDS.items():
        assert any(kind in line and os.path.basename(bad_files[stem]) in line
                   for line in str(info.value).splitlines()), (stem, kind)
    assert not (tmp_path / "refused" / "model_final.pth").exists()

    # left out of training and of the evaluation at the end (which reads every test sample)
    trainer = train(tmp_path / "skipped", skip_bad=True)
    assert trainer.iter == 2 and (tmp_path / "skipped" / "model_final.pth").exists()
    with open(tmp_path / "skipped" / "skipped_samples.json") as f:
        assert sorted(s["file"] for s in json.load(f)) == sorted(bad_files.values())
    assert list((tmp_path / "skipped" / "inference").glob("*/confusion_matrix.csv"))


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
def test_python_config_run_interrupted_and_resumed_repeats_the_losses_exactly(tmp_path):
    """The one trainer gives a Python config the YAML runs' exact resume (resumable stream,
    per-iteration reseeding, optimizer and schedule state): stopped after a checkpoint and
    resumed, the losses after it are exactly the uninterrupted run's (before: Detectron2's
    TrainingSampler restarted its stream and the augmentations drew other crops)."""
    from detectron2.engine import HookBase

    def config(out):
        return load_any_config(
            model_zoo.get_config_file("demo/deeplabv3_pointrend_synthetic.py"),
            ["train.max_iter=5", f"train.output_dir={out}", "train.checkpointer.period=1",
             "train.log_period=1", "train.eval_period=0", "dataloader.train.total_batch_size=2",
             "dataloader.train.num_workers=0", "model.sem_seg_head.train_num_points=64"])

    def losses(out):
        with open(out / "metrics.json") as f:
            rows = [json.loads(line) for line in f if "total_loss" in line]
        return {row["iteration"]: row["total_loss"] for row in rows}

    class Stop(HookBase):  # Ctrl-C after iteration 2
        def after_step(self):
            if self.trainer.iter == 2:
                raise KeyboardInterrupt

    from detectron2.utils.env import seed_all_rng

    from pointrend_seg.engine import Trainer

    _train(config(tmp_path / "whole"))
    seed_all_rng(1)
    trainer = Trainer(config(tmp_path / "cut"))
    trainer.register_hooks([Stop()])
    trainer.resume_or_load(resume=False)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    del trainer
    resumed = _train(config(tmp_path / "cut"), resume=True)
    assert resumed.start_iter in (2, 3) and resumed.iter == 5
    whole, cut = losses(tmp_path / "whole"), losses(tmp_path / "cut")
    assert sorted(whole) == [0, 1, 2, 3, 4] and cut[0] == whole[0]  # the same start
    after = [i for i in whole if i >= resumed.start_iter]
    assert [cut[i] for i in after] == [whole[i] for i in after]  # exactly


@pytest.mark.parametrize("override, expected", [
    ("model.sem_seg_head.point_head.fc_dim=0",
     "MODEL.POINT_HEAD.FC_DIM=0 must be an integer >= 1 (the width of the MLP's 3 hidden layers) "
     "(MLPPointHead's fc_dim)"),
    ("model.sem_seg_head.subdivision_num_points=-1",
     "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS=-1 must be an integer >= 1"),
    ("model.sem_seg_head.oversample_ratio=0.5", "(PointRendSegHead's oversample_ratio)"),
    ("model.sem_seg_head.hard_pixel_top_k=0.0", "(PointRendSegHead's hard_pixel_top_k)"),
    ("model.sem_seg_head.coarse_head.num_classes=1",
     "MODEL.SEM_SEG_HEAD.NUM_CLASSES=1 must be an integer >= 2 (one logit per class, softmax: "
     "a foreground/background task has 2) (DeepLabV3's num_classes)"),
    ("model.sem_seg_head.coarse_head.aspp_dilations=[6,12]",
     "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS=[6, 12] must be 3 integers >= 1"),
    ("model.sem_seg_head.coarse_head.aspp_dropout=1.0", "(DeepLabV3's aspp_dropout)"),
])
def test_python_config_values_are_checked_by_the_components(override, expected):
    """Value checks live where both config kinds pass, the constructors: a Python config's bad
    value is the YAML key's ConfigError, naming the argument too (before: YAML only; a Python
    config built a model with 0-wide layers or failed at the first prediction)."""
    cfg = model_zoo.get_config("demo/deeplabv3_pointrend_synthetic.py", [override])
    with pytest.raises(ConfigError) as info:
        instantiate(cfg.model)
    assert expected in str(info.value)
