"""
The README's commands run as written. Every ``python tools/...`` command of its ``bash`` blocks is
extracted; each tool answers ``--help``; the cheap commands run for real, in a folder laid out like
a checkout (``configs``, ``tools``, an ``output/demo/model_final.pth``), with ``python`` the
environment's interpreter (what ``source .venv/bin/activate`` gives): the two demo commands
that read the demo model, and the "Your own data" command on a generated folder dataset (with
two iterations appended, the README's own budget being 4000). And the set-up shim works.
"""
import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, demo_config, write_folder_split

README = os.path.join(REPO_ROOT, "README.md")


def readme_commands():
    """The ``python tools/...`` commands of the README's bash blocks, continuation lines joined,
    comments dropped, in order."""
    text = open(README).read()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("python tools/"):
                commands.append(line)
    return commands


COMMANDS = readme_commands()


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # `python` is this environment's interpreter, as after `source .venv/bin/activate`
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.pop("POINTREND_SEG_DEBUG", None)
    return env


def _run(command, cwd, timeout=600):
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=_env())


def test_readme_has_the_commands_we_run():
    tools = {shlex.split(c)[1] for c in COMMANDS}
    assert {"tools/train_net.py", "tools/demo.py", "tools/export_model.py",
            "tools/convert_weights.py"} <= tools
    assert any("configs/folder/deeplabv3_pointrend_folder.yaml" in c for c in COMMANDS)
    # The README says how to get that interpreter.
    text = open(README).read()
    assert "source .venv/bin/activate" in text and ".venv/bin/python tools/" in text


# Runs each tool as `python TOOL --help` would (as __main__, argv[0] the tool), all in one
# interpreter: importing torch and Detectron2 once instead of once per tool (4.5 s each).
_HELP_DRIVER = """
import contextlib, io, json, runpy, sys
results = {}
for tool in sys.argv[1:]:
    sys.argv = [tool, "--help"]
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(tool, run_name="__main__")
        except SystemExit as e:
            code = e.code or 0
    results[tool] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
print(json.dumps(results))
"""


def test_every_readme_tool_answers_help():
    tools = sorted({shlex.split(c)[1] for c in COMMANDS})
    proc = subprocess.run([sys.executable, "-c", _HELP_DRIVER, *tools], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    assert sorted(results) == tools
    for tool, r in results.items():
        assert r["code"] == 0, (tool, r["stderr"][-2000:])
        assert r["stdout"].startswith("usage:") and tool.split("/")[-1] in r["stdout"], tool
        assert "\x1b[" not in r["stdout"] + r["stderr"], tool  # no colour codes in a pipe


@pytest.fixture(scope="module")
def checkout_like(tmp_path_factory):
    """A folder with the checkout's configs and tools and a demo model at output/demo."""
    root = tmp_path_factory.mktemp("readme")
    for name in ("configs", "tools"):
        os.symlink(os.path.join(REPO_ROOT, name), root / name)
    (root / "output" / "demo").mkdir(parents=True)
    torch.manual_seed(0)
    from detectron2.modeling import build_model

    torch.save({"model": build_model(demo_config()).state_dict()},
               root / "output" / "demo" / "model_final.pth")
    # the synthetic images the README's pattern names (generated on first use)
    from detectron2.data import DatasetCatalog

    DatasetCatalog.get("synthetic_shapes_sem_seg_val")
    return root


def _commands_with(*words):
    return [c for c in COMMANDS if all(w in c for w in words)]


@pytest.mark.slow
@pytest.mark.parametrize("command", _commands_with("tools/demo.py", "MODEL.WEIGHTS output/demo/"))
def test_readme_demo_commands_run_as_written(checkout_like, command):
    if "--num-images 4" in command and "--show-points" not in command:
        pytest.skip("the same path as the --show-points command (dataset mode), run there")
    proc = _run(command, checkout_like)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = checkout_like / shlex.split(command)[shlex.split(command).index("--output") + 1]
    written = os.listdir(out)
    assert written and all(f.endswith(".png") or f == "masks" for f in written)
    if "--save-masks" in command:
        assert len(os.listdir(out / "masks")) == len(written) - 1
    if "--show-points" in command:
        assert any(f.endswith("_points.png") for f in written)


@pytest.mark.slow
def test_readme_own_data_example_trains_and_prints_the_per_class_table(checkout_like):
    (command,) = _commands_with("configs/folder/deeplabv3_pointrend_folder.yaml")
    rng = np.random.default_rng(0)
    data = checkout_like / "data"
    write_folder_split(data, "train", 4, rng)
    write_folder_split(data, "val", 2, rng)
    (data / "classes.txt").write_text("background\nroad\ncar\n")
    budget = " SOLVER.MAX_ITER 2 SOLVER.IMS_PER_BATCH 2 DATALOADER.NUM_WORKERS 0"
    proc = _run(command + budget, checkout_like)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "folder_val, per class (%):" in log
    table = log[log.index("folder_val, per class (%):"):].splitlines()[1:5]
    assert [row.split()[0] for row in table] == ["class", "background", "road", "car"]
    out = checkout_like / "output" / "my_data"
    assert (out / "model_final.pth").exists()
    assert (out / "inference" / "folder_val" / "confusion_matrix.png").exists()
    assert "\x1b[" not in log
    # the run folder describes itself: the README's demo --run needs nothing else
    (demo,) = _commands_with("tools/demo.py", "--run output/my_data")
    proc = _run(demo, checkout_like)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(out / "pictures")) == ["val0.png", "val1.png"]


def test_setup_py_shim_reads_pyproject():
    proc = subprocess.run([sys.executable, "setup.py", "--version"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    version = proc.stdout.strip().splitlines()[-1]
    assert version == re.search(r'^version = "(.*)"', open(
        os.path.join(REPO_ROOT, "pyproject.toml")).read(), flags=re.M).group(1)
