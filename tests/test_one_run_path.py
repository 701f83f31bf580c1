"""
One run path for both config kinds, end to end on own data (issue 25's scenario): a 3-class
folder dataset whose masks have void 11, images and masks as PNG, the classes in a text file.
The Python folder config needs only the dataset flags (its classes and ignore value are the
dataset's), a typo'd override stops before anything runs, and ``tools/demo.py --run OUTPUT_DIR``
draws with the run's config, weights and class names (the YAML folder config's run:
test_readme.py's own-data example).
"""
import functools
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO_ROOT, write_folder_split
import tool_process

CLASSES = ["road", "car", "tree"]


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_data")
    rng = np.random.default_rng(0)
    train, val = write_folder_split(root, "train", 4, rng, void=11), write_folder_split(
        root, "val", 2, rng, void=11)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    flags = []
    for name, (images, masks) in (("folder_train", train), ("folder_val", val)):
        flags += ["--register-folder", name, str(images), str(masks), str(root / "classes.txt"),
                  "--ignore-value", "11"]
    return root, flags


_tool = functools.partial(tool_process.tool, threads=2, timeout=600)

PY = os.path.join(REPO_ROOT, "configs", "folder", "deeplabv3_pointrend_folder.py")
YAML = os.path.join(REPO_ROOT, "configs", "folder", "deeplabv3_pointrend_folder.yaml")


def test_dataset_values_come_from_the_dataset_and_disagreement_is_one_error(prefix, tmp_path):
    from pointrend_seg.config import ConfigError, build_config, load_any_config
    from pointrend_seg.data.datasets import register_folder_dataset
    from pointrend_seg.engine import as_run_config

    name = f"{prefix}_own"
    images, masks = write_folder_split(tmp_path, "train", 1, np.random.default_rng(0))
    register_folder_dataset(name, str(images), str(masks), CLASSES, ignore_label=11)
    yaml = ["DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()", "MODEL.DEVICE", "cpu"]
    head = as_run_config(build_config(YAML, yaml)).settings.MODEL.SEM_SEG_HEAD
    assert (head.NUM_CLASSES, head.IGNORE_VALUE) == (3, 11)
    python = [f"dataloader.train.dataset.names=[{name}]",
              f"dataloader.test.dataset.names=[{name}]"]
    run = as_run_config(load_any_config(PY, python))
    assert run.config.model.sem_seg_head.coarse_head.num_classes == 3
    assert run.config.dataloader.train.mapper.augmentations.ignore_label == 11
    with pytest.raises(ConfigError, match="dataset.num_classes=4 but dataset"):
        as_run_config(load_any_config(PY, python + ["dataset.num_classes=4"]))
    # the places of one value disagree: one error listing each place and its value
    with pytest.raises(ConfigError) as error:
        as_run_config(load_any_config(PY, python + ["dataloader.test.mapper.num_classes=4",
                                                    "dataloader.train.mapper.ignore_label=12"]))
    assert str(error.value) == (
        "the num_classes differs: model.sem_seg_head.coarse_head.num_classes=3, "
        "dataloader.train.mapper.num_classes=3, dataloader.test.mapper.num_classes=4; "
        "the ignore value differs: model.sem_seg_head.ignore_value=11, "
        "dataloader.train.mapper.ignore_label=12, dataloader.train.mapper.augmentations."
        "ignore_label=11, dataloader.test.mapper.ignore_label=11, dataloader.test.mapper."
        "augmentations.ignore_label=11 (set dataset.num_classes / dataset.ignore_value where the "
        "config has them, or each key)")
    # a YAML value set against the dataset: the start-of-run check names both
    from pointrend_seg.engine import prepare_run

    with pytest.raises(ConfigError, match="has 3 classes .*NUM_CLASSES=4"):
        prepare_run(build_config(YAML, yaml + ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "4"]))
    # unregistered: one error saying where the value would come from
    with pytest.raises(ConfigError, match="NUM_CLASSES=0 takes the dataset's value"):
        as_run_config(build_config(YAML, ["DATASETS.TRAIN", "('nowhere',)", "MODEL.DEVICE",
                                          "cpu"]))
    with pytest.raises(ConfigError, match=r"dataset.num_classes=None takes the dataset's value, "
                                          r"but dataset 'nowhere' has no stuff_classes"):
        as_run_config(load_any_config(PY, ["dataloader.train.dataset.names=[nowhere]"]))


def test_a_typod_python_override_on_own_data_stops_at_once(folder_data, tmp_path):
    root, flags = folder_data
    start = time.monotonic()
    proc = _tool("train_net.py", "--config-file", PY, *flags, "train.max_iters=2",
                 f"train.output_dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and time.monotonic() - start < 90
    assert "did you mean train.max_iter?" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_own_data_trains_with_the_dataset_flags_only_and_the_run_folder_draws(
        folder_data, tmp_path):
    """The Python folder config (the YAML one: test_readme.py's own-data example, which also
    draws with demo.py --run)."""
    root, flags = folder_data
    out = tmp_path / "run"
    proc = _tool("train_net.py", "--config-file", PY, *flags, "train.max_iter=4",
                 f"train.output_dir={out}", "dataloader.train.total_batch_size=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    table = log[log.index("folder_val, per class (%):"):].splitlines()[1:5]
    assert [row.split()[0] for row in table] == ["class"] + CLASSES  # 3 classes, 11 ignored
    # the class names travel with the model
    assert torch.load(out / "model_final.pth", weights_only=True)["model_info"]["classes"] == \
        CLASSES
    # a fresh process with no dataset registered: the run folder is enough
    pictures = tmp_path / "pictures"
    image = root / "val" / "images" / "val0.png"
    proc = _tool("demo.py", "--run", str(out), "--input", str(image), "--output", str(pictures),
                 "--save-masks")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(pictures)) == ["masks", "val0.png"]
    mask = np.asarray(Image.open(pictures / "masks" / "val0.png"))
    assert mask.shape == (48, 64) and mask.max() < len(CLASSES)
    # export_model.py --run reads the same (what it exports: test_export.py)
    import export_model
    from pointrend_seg.engine.cli import config_from_args

    args = export_model.parse_args(["--run", str(out), "--output", str(tmp_path / "exported")])
    run, weights = config_from_args(args, device="cpu")
    assert export_model.class_names(run, args, weights) == CLASSES
    assert weights == str(out / "model_final.pth") and run.settings.MODEL.DEVICE == "cpu"
    assert run.settings.MODEL.SEM_SEG_HEAD.IGNORE_VALUE == 11


def test_run_folder_config_is_data(tmp_path):
    """``--run``: a Python run's config.yaml may name only the callables of models, data,
    evaluation, optimizers and schedules; anything else is refused before it is imported."""
    from pointrend_seg.config import ConfigError
    from pointrend_seg.engine.run_folder import load_run_folder

    marker = tmp_path / "pwned"
    for target in ("os.system", "builtins.exec", "torch.load", "detectron2.model_zoo.get",
                   "pointrend_seg.engine.trainer.Trainer"):
        (tmp_path / "config.yaml").write_text(
            f"model:\n  _target_: {target}\n  command: touch {marker}\ntrain: {{}}\n")
        with pytest.raises(ConfigError, match=f"may not name .*{target}"):
            load_run_folder(str(tmp_path))
    assert not marker.exists()
    (tmp_path / "config.yaml").write_text("model: {}\ntrain: {}\n")
    with pytest.raises(ConfigError, match="no model_final.pth and no last_checkpoint"):
        load_run_folder(str(tmp_path))
    with pytest.raises(ConfigError, match="no config.yaml there"):
        load_run_folder(str(tmp_path / "nothing"))


def test_checkpoint_class_names_must_fit_the_model(tmp_path):
    import export_model
    from pointrend_seg.config import ConfigError
    from pointrend_seg.engine.cli import class_names_for, config_from_args

    weights = tmp_path / "model.pth"
    torch.save({"model": {}, "model_info": {"classes": CLASSES, "colors": [[0, 0, 0]] * 3}},
               weights)
    args = export_model.parse_args([
        "--config-file", os.path.join(REPO_ROOT, "configs", "demo",
                                      "deeplabv3_pointrend_synthetic.yaml"),
        "--weights", str(weights), "--output", str(tmp_path / "out")])
    run, got = config_from_args(args, device="cpu")
    assert got == str(weights)
    with pytest.raises(ConfigError, match="names 3 classes, the config's model has 5"):
        class_names_for(run, args, got)
    args.classes = "a,b,c,d,e"  # given names win
    assert class_names_for(run, args, got)[0] == ["a", "b", "c", "d", "e"]


def test_a_gpu_run_folder_is_read_for_the_cpu(tmp_path):
    """export_model.py --run on a CPU machine: the run's config.yaml says MODEL.DEVICE cuda
    (trained on a GPU); the device is an override of the read, not set afterwards (before: the
    YAML reader refused the CUDA device first on a machine without one)."""
    from pointrend_seg.engine.run_folder import load_run_folder

    (tmp_path / "config.yaml").write_text("MODEL:\n  DEVICE: cuda\n")
    (tmp_path / "model_final.pth").write_bytes(b"")
    config, weights = load_run_folder(str(tmp_path), device="cpu")
    assert config.MODEL.DEVICE == "cpu" and weights == str(tmp_path / "model_final.pth")
    (tmp_path / "config.yaml").write_text("model: {}\ntrain: {device: cuda}\n")
    config, _ = load_run_folder(str(tmp_path), device="cpu")
    assert config.train.device == "cpu"


DEMO_PY = os.path.join(REPO_ROOT, "configs", "demo", "deeplabv3_pointrend_synthetic.py")


@pytest.mark.parametrize("opts, message", [
    (["train.max_iter=0"], "train.max_iter=0 must be an integer >= 1"),
    # before: an OverflowError in Detectron2's time estimate, after setup
    ([f"train.max_iter={10 ** 30}"], f"train.max_iter={10 ** 30} must be at most 2**31 - 1 = "
     "2147483647 (beyond any real run; Detectron2's time estimate overflows on larger values)"),
    (["dataloader.train.total_batch_size=0"],
     "dataloader.train.total_batch_size=0 must be an integer >= 1"),
    (["train.checkpointer.period=0"], "train.checkpointer.period=0 must be an integer >= 1"),
    (["train.eval_period=-1"], "train.eval_period=-1 must be an integer >= 0"),
    (["train.amp.enabled=True", "train.amp.precision=float8"],
     "train.amp.precision must be one of ['bfloat16', 'float16'], got 'float8'"),
    (["optimizer.lr=-1"], "the optimizer refuses optimizer.*: Invalid learning rate: -1"),
    (["optimizer.weight_decay=-1"],
     "the optimizer refuses optimizer.*: Invalid weight_decay value: -1"),
    # before: a non-finite loss at the first step, with learning-rate advice
    (["optimizer.weight_decay=1e400"],
     "the optimizer refuses optimizer.*: weight_decay=inf is not a finite number"),
    # before: accepted; the first learning rates negative (gradient ascent), or a
    # ZeroDivisionError after the last iteration
    (["lr_multiplier.warmup_factor=-1"], "the learning rate of lr_multiplier (times optimizer.lr) "
     "is -0.002 at iteration 0: it must be a finite number >= 0 (a negative one is gradient "
     "ascent)"),
    (["lr_multiplier.scheduler.power=-0.9"], "lr_multiplier (times optimizer.lr): no learning "
     "rate at iteration 800 (ZeroDivisionError: 0.0 cannot be raised to a negative power)"),
    # before: accepted; the check's warning never given
    (["train.dataset_check.max_ignored_fraction=2"], "train.dataset_check.max_ignored_fraction=2 "
     "must be in [0, 1] (the share of ignored label pixels above which the check warns) "
     "(check_dataset's max_ignored_fraction)"),
    # before: accepted; trained with a negative point loss (gradient ascent) or a channel
    # always 0 (x / inf)
    (["model.sem_seg_head.point_loss_weight=-1.0"], "MODEL.POINT_HEAD.LOSS_WEIGHT=-1.0 must be "
     "a finite number >= 0 (0 turns the loss off; a negative one is gradient ascent) "
     "(PointRendSegHead's point_loss_weight)"),
    # before: a ValueError traceback / a bare AssertionError after config.yaml was written
    (["train.seed=99999999999"], "train.seed=99999999999 must be an integer <= 4294967295 "
     "(NumPy seeds are below 2**32) or negative (a random seed)"),
    (["dataloader.train.dataset.names=[]"],
     "dataloader.train.dataset.names is empty: training needs at least one dataset"),
    # before: every image of the dataset check listed as a "degenerate image"
    (["dataloader.train.mapper.augmentations.max_size_train=0"], "INPUT.MAX_SIZE_TRAIN=0 must be "
     "an integer >= 1 (pixels) (sem_seg_augmentations's max_size_train)"),
    (["dataloader.test.mapper.augmentations.min_size_test=-1"], "INPUT.MIN_SIZE_TEST=-1 must be "
     "an integer >= 0 (0: no resize) (sem_seg_augmentations's min_size_test)"),
    (["model.pixel_std=[1e400,1.0,1.0]"], "MODEL.PIXEL_STD=[inf, 1.0, 1.0] must be finite "
     "positive numbers (a division: inf makes a channel 0) (GeneralizedSemanticSegmentor's "
     "pixel_std)"),
])
def test_a_python_config_value_error_names_the_key_the_user_wrote(opts, message):
    """The run's checks of a Python config name its keys (before: SOLVER.MAX_ITER=0 for
    train.max_iter=0, SOLVER.IMS_PER_BATCH for the batch size; optimizer.lr=-1 was torch's
    ValueError, a traceback); a YAML config's name the YAML keys."""
    from pointrend_seg.config import ConfigError, load_any_config
    from pointrend_seg.engine.run import check_config

    with pytest.raises(ConfigError) as e:
        check_config(load_any_config(DEMO_PY, opts), train=True)
    assert str(e.value) == message and "SOLVER" not in str(e.value)


def test_a_yaml_schedule_with_a_negative_learning_rate_is_one_error_naming_its_keys():
    """A negative SOLVER.GAMMA made the learning rate negative from the first iteration
    (measured: -2.04e-06 at iteration 1 of the demo config with WarmupMultiStepLR), silently."""
    from conftest import demo_config
    from pointrend_seg.config import ConfigError
    from pointrend_seg.engine.run import check_config

    with pytest.raises(ConfigError, match=r"^the learning rate of SOLVER.BASE_LR / "
                       r"LR_SCHEDULER_NAME / WARMUP_\* / STEPS / GAMMA / POLY_LR_POWER is -"):
        check_config(demo_config("SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStepLR",
                                 "SOLVER.STEPS", "(10,)", "SOLVER.GAMMA", "-0.1"), train=True)
    check_config(demo_config("SOLVER.LR_SCHEDULER_NAME", "WarmupMultiStepLR", "SOLVER.STEPS",
                             "(10,)", "SOLVER.GAMMA", "0.1"), train=True)


@pytest.mark.parametrize("value", ["-1.0", ".nan", ".inf"])
def test_a_yaml_value_the_optimizer_refuses_is_one_error_naming_its_key(tmp_path, value):
    """Before: -1.0 was torch's refusal naming SOLVER.BASE_LR / MOMENTUM / WEIGHT_DECAY; inf
    (1e400) a non-finite loss at the first step with learning-rate advice."""
    from conftest import DEMO_CONFIG
    from pointrend_seg.config import ConfigError, build_config
    from pointrend_seg.engine.run import check_config

    path = tmp_path / "decay.yaml"
    path.write_text(f"_BASE_: {DEMO_CONFIG}\nSOLVER:\n  WEIGHT_DECAY: {value}\n")
    with pytest.raises(ConfigError) as e:
        check_config(build_config(str(path)), train=True)
    shown = {"-1.0": "-1.0", ".nan": "nan", ".inf": "inf"}[value]
    assert str(e.value) == f"SOLVER.WEIGHT_DECAY={shown} must be a finite number >= 0"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_python_config_asking_for_cuda_on_a_cpu_machine_names_train_device():
    from pointrend_seg.config import ConfigError, load_any_config
    from pointrend_seg.engine import as_run_config

    with pytest.raises(ConfigError) as e:
        as_run_config(load_any_config(DEMO_PY, ["train.device=cuda"]))
    assert str(e.value) == ("train.device='cuda' but no CUDA device is available; add "
                            "train.device=cpu to the command line")
