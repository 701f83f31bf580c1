"""
The speed benchmark (tools/benchmark.py, tools/benchmarks/) on CPU with tiny sizes: medians,
failure capture, FLOP counts, that prepared rows run the prepared model (and leave it as it
was), that the head-level comparison times the same work (ours as built and prepared, and the
reference produce the same logits), derived figures and the CLI's report. Timings themselves are
not checked.
"""
import importlib.util
import json
import os

import pytest
import torch
from detectron2.layers import Conv2d
from torch import nn
from torch.nn import functional as F

from benchmarks import core as bench  # tools/benchmarks (tests/conftest.py puts tools/ on the path)
from benchmarks.report import derived_notes
from pointrend_seg.modeling import FastPointRendSegHead, PointRendSegHead

SIZE = (64, 128)


pytestmark = pytest.mark.usefixtures("one_intra_op_thread")



def test_summarize_timings_median():
    # Medians, not means (an outlier iteration must not move them).
    odd = bench.summarize_timings([0.010, 0.001, 0.002], batch=2)
    assert odd["median_ms"] == pytest.approx(2.0)
    assert odd["ms_per_img"] == pytest.approx(1.0)
    assert odd["images_per_s"] == pytest.approx(1000.0)
    assert odd["times_ms"] == pytest.approx([10.0, 1.0, 2.0])
    even = bench.summarize_timings([0.004, 0.001, 0.003, 0.010], batch=1)
    assert even["median_ms"] == pytest.approx(3.5)
    assert even["images_per_s"] == pytest.approx(1 / 0.0035)
    with pytest.raises(ValueError):
        bench.summarize_timings([], batch=1)


def test_time_fn_excludes_warmup_and_syncs():
    ticks = iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0])
    calls, syncs = [], []
    times = bench.time_fn(lambda: calls.append(1), warmup=2, repeats=3,
                          sync=lambda: syncs.append(1), clock=lambda: next(ticks))
    assert times == [3.0, 1.0, 2.0]
    assert len(calls) == 5  # 2 untimed + 3 timed
    assert len(syncs) == 4  # after the warm-ups, then after every timed call
    assert bench.summarize_timings(times, 1)["median_ms"] == pytest.approx(2000.0)


def test_time_round_robin_interleaves_and_records_failures():
    ticks = iter(range(100))
    calls = []

    def fn(name):
        def call():
            calls.append(name)
            if name == "c" and len(calls) > 3:
                raise RuntimeError("out of memory")
        return call

    results = bench.time_round_robin([fn("a"), fn("b"), fn("c")], warmup=1, repeats=2,
                                     clock=lambda: next(ticks))
    # one warm-up round, then two timed rounds, the functions in turn; c failed in round 2
    assert calls == ["a", "b", "c", "a", "b", "c", "a", "b"]
    assert results[0] == ([1, 1], None) and results[1] == ([1, 1], None)
    assert isinstance(results[2], RuntimeError)


class _Tiny(nn.Module):
    """
    A Detectron2-style model (a 1x1 convolution with batch norm); raises (like the reference
    head's scatter_) under autocast; records whether its batch norm was folded when it ran.
    """

    def __init__(self, fail_under_autocast=False):
        super().__init__()
        self.conv = Conv2d(3, 2, 1, bias=False, norm=nn.BatchNorm2d(2))
        self.fail_under_autocast = fail_under_autocast
        self.ran_folded = set()

    def forward(self, batched_inputs):
        if self.fail_under_autocast and torch.is_autocast_enabled("cpu"):
            raise RuntimeError("scatter(): Expected self.dtype to be equal to src.dtype")
        if not self.training:
            self.ran_folded.add(self.conv.norm is None)
        y = self.conv(torch.stack([x["image"] for x in batched_inputs]) / 255)
        if self.training:
            return {"loss": F.cross_entropy(y.float(), torch.stack(
                [x["sem_seg"] for x in batched_inputs]).clamp(max=1))}
        return [{"sem_seg": r} for r in y]


def test_failures_are_recorded_not_raised():
    def broken_build(device):
        raise ValueError("cannot build\nsecond line")

    specs = [
        bench.ModelSpec("ours_tiny", lambda d: _Tiny(True).to(d), reference="ref_tiny"),
        bench.ModelSpec("ref_tiny", lambda d: _Tiny().to(d)),
        bench.ModelSpec("broken", broken_build),
    ]
    rows = bench.run_model_benchmarks(specs, device="cpu", size=(32, 32), batch=2,
                                      amps=("none", "bf16"), repeats=2, warmup=1,
                                      modes=("inference", "train"))
    bench.add_ratios(rows)
    by = {(r["model"], r["mode"], r["amp"]): r for r in rows}
    assert len(rows) == 3 * 2 * 2
    for mode in ("inference", "train"):
        ok = by[("ours_tiny", mode, "none")]
        assert ok["status"] == "ok" and ok["ms_per_img"] > 0 and len(ok["times_ms"]) == 2
        assert ok["ratio_vs_reference"] == pytest.approx(
            ok["ms_per_img"] / by[("ref_tiny", mode, "none")]["ms_per_img"])
        failed = by[("ours_tiny", mode, "bf16")]
        assert failed["status"] == ("fails: RuntimeError: scatter(): Expected self.dtype to be "
                                    "equal to src.dtype")
        assert failed["ms_per_img"] is None and failed["ratio_vs_reference"] is None
        assert by[("ref_tiny", mode, "bf16")]["status"] == "ok"
        for amp in ("none", "bf16"):
            assert by[("broken", mode, amp)]["status"] == "fails: ValueError: cannot build"
        # FLOPs per image of the 1x1 convolution (3 -> 2 channels, 32x32, multiply + add); in
        # training also its weight gradient (the input needs none): twice that
        flops = 2 * 3 * 2 * 32 * 32 / 1e9
        assert ok["gflop_per_img"] == pytest.approx(flops * (1 if mode == "inference" else 2))
        achieved = ok["gflop_per_img"] * 2 / 1e3 / (ok["median_ms"] / 1e3)  # batch 2
        assert ok["tflops"] == pytest.approx(achieved)
    assert by[("ours_tiny", "train", "none")]["optimizer"] == "SGD foreach"
    report = {"meta": _meta(), "rows": rows}
    md = bench.format_markdown(report)
    assert "| ours_tiny | - | inference | b2 32x32 bf16 | fails: RuntimeError: scatter()" in md


def test_prepared_rows_run_the_prepared_model_and_restore_it():
    model = _Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spec = bench.ModelSpec("ours_tiny", lambda d: model, preparable=True)
    rows = bench.run_model_benchmarks([spec], device="cpu", size=(32, 32), batch=1,
                                      repeats=1, warmup=0, prepare=("off", "on"))
    assert [(r["variant"], r["status"]) for r in rows] == [("", "ok"), ("prepared", "ok")]
    assert model.ran_folded == {False, True}  # both variants really ran
    assert model.conv.norm is not None  # undone afterwards
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    rows = bench.run_model_benchmarks([spec], device="cpu", size=(32, 32), batch=1,
                                      repeats=1, warmup=0, prepare=("on",))
    assert [r["variant"] for r in rows] == ["prepared"]


def test_interleaved_rows_time_each_variant_on_its_own_model():
    """--interleave: the prepared variant runs on a prepared copy (the built model stays as it
    is), every row is timed in the same rounds, and a training row of the same model does not
    leave the interleaved inference in training mode."""
    model = _Tiny()
    spec = bench.ModelSpec("ours_tiny", lambda d: model, preparable=True)
    rows = bench.run_model_benchmarks([spec], device="cpu", size=(32, 32), batch=1, repeats=3,
                                      warmup=1, prepare=("off", "on"), interleave=True,
                                      modes=("inference", "train"))
    by = {(r["mode"], r["variant"]): r for r in rows}
    assert set(by) == {("inference", ""), ("inference", "prepared"), ("train", "")}
    for r in rows:
        assert r["status"] == "ok" and len(r["times_ms"]) == 3 and r["gflop_per_img"] > 0
    assert model.ran_folded == {False}  # the built model itself was never folded
    assert model.conv.norm is not None


def test_derived_notes_refinement_share():
    rows = [dict(model="ours_pointrend", mode="inference", setting="s", variant="prepared",
                 ms_per_img=12.0),
            dict(model="ours_deeplabv3", mode="inference", setting="s", variant="prepared",
                 ms_per_img=10.0),
            dict(model="ours_pointrend", mode="inference", setting="s", variant="",
                 ms_per_img=20.0)]  # no bilinear row of that variant: no note
    assert derived_notes(rows) == [
        "PointRend cost (inference, s, prepared): ours_pointrend / ours_deeplabv3 = 1.20x; "
        "the refinement is 17% of the end-to-end time"]


def _meta():
    return {"hardware": "cpu", "device": "cpu", "torch": torch.__version__, "cuda": None,
            "detectron2": "0.6", "threads": 1, "date": "today", "size": [32, 32], "batch": 2,
            "repeats": 2, "warmup": 1, "num_classes": 19, "seed": 0, "models": {}, "heads": None}


def test_head_comparison_same_work():
    pair = bench.build_head_pair(device="cpu", size=SIZE, batch=2,
                                 opts=bench.NARROW_OPTS["ours_pointrend"])
    assert pair["stride"] == 16 and pair["steps"] == 4
    assert pair["ref"].subdivision_steps == pair["steps"]
    assert pair["ref"].subdivision_num_points == pair["num_points"] == 8192
    assert type(pair["ours"]) is PointRendSegHead
    assert type(pair["prepared"]) is FastPointRendSegHead
    ours, prepared, ref = bench.head_outputs(pair)
    assert ours.shape == prepared.shape == ref.shape == (2, 19) + SIZE
    assert (ours - ref).abs().max().item() <= 1e-5
    assert (prepared - ref).abs().max().item() <= 1e-5
    # The point head did change the prediction (the comparison is not just two upsamplings).
    bilinear = F.interpolate(pair["coarse_logits"], size=SIZE, mode="bilinear",
                             align_corners=False)
    assert (ours - bilinear).abs().max().item() > 1e-3

    rows = bench.run_head_comparison(device="cpu", size=SIZE, batch=1, amps=("none", "bf16"),
                                     repeats=2, warmup=0,
                                     opts=bench.NARROW_OPTS["ours_pointrend"])
    by = {(r["model"], r["variant"], r["amp"]): r for r in rows}
    variants = ["", "prepared"]
    assert set(by) == {("head_ours", v, a) for v in variants for a in ("none", "bf16")} | {
        ("head_ref", "", a) for a in ("none", "bf16")}
    ref_row = by[("head_ref", "", "none")]
    assert ref_row["status"] == "ok"
    for v in variants:
        row = by[("head_ours", v, "none")]
        assert row["status"] == "ok" and row["max_abs_diff_vs_ref"] <= 1e-5, v
        assert row["ratio_vs_reference"] is None  # ratios: later
        # The reference head scatters bf16 point logits into float32 logits: recorded, not raised.
        assert by[("head_ours", v, "bf16")]["status"] == "ok"
        assert by[("head_ours", v, "bf16")]["max_abs_diff_vs_ref"] is None
    # As built, ours does the reference's work: the same products.
    assert by[("head_ours", "", "none")]["gflop_per_img"] == pytest.approx(
        ref_row["gflop_per_img"], rel=1e-6)
    # Prepared, it does less: at 64x128 with N = 8192 every step re-predicts all its cells
    # (8x16 ... 64x128), so it skips the first three (overwritten), and res2 (16x32 = 512
    # pixels) has fewer pixels than the 8192 points, so the first layer's product with the fine
    # features (C = 64 -> 64) is applied to the map. The narrow point head: 3 layers of 64 + a
    # predictor of 19 classes, the coarse logits (+ a bias column) at each layer.
    c, k, points, pixels = 64, 19, 64 * 128, 16 * 32
    per_point = 2 * (c * (k + 1) + 2 * c * (c + k + 1) + k * (c + k + 1))
    expected = points * per_point + 2 * c * c * pixels
    assert by[("head_ours", "prepared", "none")]["gflop_per_img"] == pytest.approx(
        expected / 1e9, rel=1e-6)
    assert expected / 1e9 < 0.7 * ref_row["gflop_per_img"]
    assert by[("head_ref", "", "bf16")]["status"].startswith("fails: RuntimeError: scatter")
    bench.add_ratios(rows)
    for v in variants:
        assert by[("head_ours", v, "none")]["ratio_vs_reference"] == pytest.approx(
            by[("head_ours", v, "none")]["ms_per_img"] / ref_row["ms_per_img"])


def _load_tool(repo_root):
    path = os.path.join(repo_root, "tools", "benchmark.py")
    spec = importlib.util.spec_from_file_location("benchmark_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_report(repo_root, tmp_path, capsys):
    tool = _load_tool(repo_root)
    out = tmp_path / "bench" / "result"
    report = tool.main([
        "--device", "cpu", "--size", *map(str, SIZE), "--batch", "1", "--repeats", "2",
        "--warmup", "0", "--narrow", "--modes", "inference", "train", "--threads", "1",
        "--quiet", "--output", str(out),
    ])
    names = list(bench.MODEL_NAMES)
    expected = {(m, mode, "") for m in names for mode in ("inference", "train")}
    expected |= {(m, "inference", "prepared") for m in ("ours_pointrend", "ours_deeplabv3")}
    expected |= {("head_ours", "head-inference", ""), ("head_ours", "head-inference", "prepared"),
                 ("head_ref", "head-inference", "")}
    rows = report["rows"]
    assert {(r["model"], r["mode"], r["variant"]) for r in rows} == expected
    assert len(rows) == len(expected)
    for r in rows:
        assert r["status"] == "ok", (r["model"], r["mode"], r["status"])
        assert r["size"] == list(SIZE) and r["batch"] == 1 and len(r["times_ms"]) == 2
        assert r["median_ms"] > 0 and r["images_per_s"] > 0 and r["peak_mem_mb"] is None
        assert r["gflop_per_img"] > 0 and r["tflops"] > 0
        if r["model"] in bench.REFERENCE_OF:
            assert r["reference"] == bench.REFERENCE_OF[r["model"]]
            assert r["ratio_vs_reference"] > 0
    meta = report["meta"]
    assert meta["torch"] == torch.__version__ and meta["threads"] == 1 and meta["narrow"]
    assert set(meta["models"]) == set(names)

    with open(str(out) + ".json") as f:
        saved = json.load(f)
    assert saved["rows"] == json.loads(json.dumps(rows))
    with open(str(out) + ".md") as f:
        md = f.read()
    assert md == capsys.readouterr().out.rstrip("\n") + "\n"
    assert meta["hardware"] in md and f"torch {torch.__version__}" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(rows)  # header + one line per row
    assert "x ref_pointrend_fpn |" in md and "x ref_deeplabv3 |" in md
    assert "| ours_pointrend | prepared | inference |" in md
    assert "the refinement is" in md  # PointRend's share, from ours with and without it
    # prepared and as-built ours are compared with the same reference row
    by = {(r["model"], r["mode"], r["variant"]): r for r in rows}
    ref_ms = by[("ref_deeplabv3", "inference", "")]["ms_per_img"]
    for v in ("", "prepared"):
        r = by[("ours_deeplabv3", "inference", v)]
        assert r["ratio_vs_reference"] == pytest.approx(r["ms_per_img"] / ref_ms)

    with pytest.raises(SystemExit, match="multiples of 32"):
        tool.main(["--device", "cpu", "--size", "60", "128", "--quiet"])


def test_cli_exits_non_zero_when_nothing_was_measured(repo_root, capsys):
    tool = _load_tool(repo_root)
    with pytest.raises(SystemExit, match="nothing was measured"):
        tool.main(["--device", "cpu", "--size", *map(str, SIZE), "--repeats", "1",
                   "--warmup", "0", "--models", "ours_pointrend", "--quiet",
                   "--ours-config", "no/such_config.yaml"])
    assert "fails: FileNotFoundError" in capsys.readouterr().out


def test_report_paths_of_a_folder_and_an_output_that_is_a_file(repo_root, tmp_path, capsys):
    """--output DIR/ (or an existing folder) writes DIR/benchmark.json and .md (before: the hidden
    files DIR/.json and DIR/.md); an --output inside a file is refused before the benchmark runs
    (before: a FileExistsError traceback after it ran, its results lost)."""
    from benchmarks.report import report_paths

    folder = tmp_path / "results"
    assert report_paths(f"{folder}/") == (f"{folder}/benchmark.json", f"{folder}/benchmark.md")
    folder.mkdir()
    assert report_paths(str(folder)) == (str(folder / "benchmark.json"),
                                         str(folder / "benchmark.md"))
    assert report_paths(str(tmp_path / "r.json")) == (str(tmp_path / "r.json"),
                                                      str(tmp_path / "r.md"))
    assert report_paths(str(tmp_path / "r")) == (str(tmp_path / "r.json"), str(tmp_path / "r.md"))
    tool = _load_tool(repo_root)
    afile = tmp_path / "afile"
    afile.write_text("precious")
    for output, message in [(f"{afile}/r", f"--output {afile}/r: {afile} is a file"),
                            (f"{afile}/", f"--output {afile}/ is a file")]:
        with pytest.raises(SystemExit) as info:
            tool.parse_args(["--device", "cpu", "--output", output])
        assert info.value.code == 2 and message in capsys.readouterr().err
    assert tool.parse_args(["--output", str(folder)]).output == str(folder)
