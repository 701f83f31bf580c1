"""
One start-of-run phase: a training run (with its evaluations) checks its config and datasets once,
before anything is built, and builds its loaders from that plan.
"""
import pytest

from pointrend_seg.data import dataset_check
from pointrend_seg.engine import RunPlan, Trainer, prepare_run
from pointrend_seg.engine import run as run_module

from conftest import demo_config, torch_threads


@pytest.mark.slow
def test_a_training_run_checks_once_and_builds_from_the_plan(tmp_path, monkeypatch):
    calls, reads = [], []
    real_check, real_read = run_module.check_run_datasets, dataset_check.check_dataset_dicts
    monkeypatch.setattr(run_module, "check_run_datasets",
                        lambda cfg, names, **kw: calls.append(list(names)) or real_check(cfg, names,
                                                                                        **kw))
    monkeypatch.setattr(dataset_check, "check_dataset_dicts",
                        lambda *a, **kw: reads.append(kw["dataset_name"]) or real_read(*a, **kw))
    cfg = demo_config("OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "2",
                      "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
                      "TEST.EVAL_PERIOD", "1", "TEST.BOUNDARY_EVAL.ENABLED", "False",
                      # Detectron2's build_hooks builds a train loader for it, without the plan:
                      # that loader must not check the datasets again
                      "TEST.PRECISE_BN.ENABLED", "True", "TEST.PRECISE_BN.NUM_ITER", "1")
    # tools/train_net.py's main: the plan, then the trainer built from it
    plan = prepare_run(cfg)
    trainer = Trainer(cfg, plan)
    trainer.resume_or_load(resume=False)
    with torch_threads(1):
        trainer.train()  # two periodic evaluations, the test loaders built from the plan
    assert calls == [["synthetic_shapes_sem_seg_train", "synthetic_shapes_sem_seg_val"]]
    assert reads == ["synthetic_shapes_sem_seg_train", "synthetic_shapes_sem_seg_val"]
    assert trainer.plan is plan and isinstance(plan, RunPlan)


def test_the_plan_leaves_out_what_the_check_skipped():
    from pointrend_seg.data import DatasetReport
    from pointrend_seg.data.dataset_check import SampleProblem

    report = DatasetReport("d", ["a", "b"], 255, 3, problems=[
        SampleProblem("d", 1, "label values", "l1.png", "...", "i1.png")])
    plan = RunPlan(reports={"d": report}, skipped=frozenset({"i1.png"}))
    assert plan.skipped_in("d") == {"i1.png"} and plan.skipped_in("other") == frozenset()


@pytest.mark.parametrize("opts, expected", [
    (("SOLVER.OPTIMIZER", "ADAMX"), "SOLVER.OPTIMIZER"),
    (("SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.PRECISION", "float8"), "SOLVER.AMP.PRECISION"),
    (("MODEL.POINT_HEAD.FC_DIM", "0"), "MODEL.POINT_HEAD.FC_DIM"),
])
def test_cheap_checks_and_the_model_come_before_any_dataset_file_is_read(monkeypatch, opts,
                                                                         expected):
    """A typo in the optimizer, the precision or a model key stops the trainer before the
    dataset check reads a file (before: after reading all of Cityscapes)."""
    from pointrend_seg.config import ConfigError

    reads = []
    monkeypatch.setattr(dataset_check, "check_dataset_dicts",
                        lambda *a, **kw: reads.append(kw["dataset_name"]))
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        Trainer(demo_config("DATASETS.CHECK.CACHE_DIR", "", *opts))
    assert reads == []
