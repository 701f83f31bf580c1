"""
The package's layers import only downward, and the package works when installed from a wheel
(non-editable), outside the checkout.

Layers, bottom to top: ``config`` -> ``model_zoo`` (finding the shipped configs) -> modeling /
data / visualization -> evaluation (reads the ground truth through data, as in Detectron2) ->
the shipped Python configs (``model_zoo/configs``: LazyCall trees of the layers below, with their
builders in ``configs/common``) -> engine (which reads them); the tools sit on top, outside the
package. A module may import its own layer's modules only
within its own sub-package (modeling does not import data, ...).
"""
import ast
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

PACKAGE = os.path.join(REPO_ROOT, "pointrend_seg")
LAYER = {
    "config": 0, "files": 0, "model_zoo": 1,
    "modeling": 2, "data": 2, "visualization": 2, "evaluation": 3, "configs": 3.5,
    "engine": 4,
}
CONFIGS = os.path.join(PACKAGE, "model_zoo", "configs")


def _modules():
    """The package's modules, the LazyConfig files under model_zoo/configs included."""
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, REPO_ROOT)[:-3].replace(os.sep, ".")
                yield path, rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _imported_modules(path, module):
    """Absolute names of the pointrend_seg modules that ``module`` (file ``path``) imports."""
    is_package = path.endswith("__init__.py")
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pointrend_seg"):
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                base = parts if is_package else parts[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("pointrend_seg"):
                if node.module is None:  # "from . import data": the names are modules
                    for alias in node.names:
                        yield f"{target}.{alias.name}"
                else:
                    yield target


def _part(module):
    """The top-level sub-package (or module) of pointrend_seg that ``module`` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_layers_import_only_downward():
    broken = []
    for path, module in _modules():
        src = "configs" if path.startswith(CONFIGS + os.sep) else _part(module)
        if src is None:  # pointrend_seg/__init__.py assembles the public API
            continue
        assert src in LAYER, f"{module}: sub-package {src!r} has no layer in this test"
        for target in _imported_modules(path, module):
            dst = _part(target)
            if dst is None:
                broken.append(f"{module} -> {target} (the package root imports everything)")
                continue
            if dst == src:
                continue
            if LAYER[dst] >= LAYER[src]:
                broken.append(f"{module} (layer {LAYER[src]}) -> {target} (layer {LAYER[dst]})")
    assert not broken, "imports against the layering:\n" + "\n".join(broken)


def test_import_walker_resolves_relative_imports(tmp_path):
    """The walker above sees every kind of import (else the layering test could not fail)."""
    path = tmp_path / "meta_arch.py"
    path.write_text(
        "import pointrend_seg.engine.trainer\n"
        "from ..engine import Trainer\n"
        "from .. import data\n"
        "from .point_heads import MLPPointHead\n"
        "from pointrend_seg.config import build_config\n"
        "import torch\n"
    )
    found = list(_imported_modules(str(path), "pointrend_seg.modeling.meta_arch"))
    assert found == ["pointrend_seg.engine.trainer", "pointrend_seg.engine", "pointrend_seg.data",
                     "pointrend_seg.modeling.point_heads", "pointrend_seg.config"]


def test_benchmark_library_is_not_in_the_package():
    assert not os.path.exists(os.path.join(PACKAGE, "benchmark.py"))
    assert os.path.isfile(os.path.join(REPO_ROOT, "tools", "benchmarks", "core.py"))


def _site_dirs():
    """The running interpreter's package folders (torch, Detectron2, ... for the new venv)."""
    return [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]


SMOKE = """
import os, sys, torch
import pointrend_seg
from pointrend_seg import model_zoo
from detectron2.modeling import build_model
assert pointrend_seg.__file__.startswith(sys.prefix), pointrend_seg.__file__
cfg = model_zoo.get_config("demo/deeplabv3_pointrend_synthetic.yaml", ["MODEL.DEVICE", "cpu"])
model = build_model(cfg).eval()
with torch.no_grad():
    (out,) = model([{"image": torch.rand(3, 61, 75) * 255}])
print(len(model_zoo.list_configs()), tuple(out["sem_seg"].shape), type(model).__name__)
"""


@pytest.mark.slow
def test_wheel_install_outside_the_checkout(tmp_path):
    """
    ``pip install .`` from a copy of the sources into a fresh virtual environment (which reuses
    this interpreter's torch / Detectron2 through a .pth line), then, from a folder outside the
    checkout: import, a shipped config through the package's lookup, one inference.
    """
    files = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    copy = tmp_path / "src"
    for rel in files:
        src = os.path.join(REPO_ROOT, rel)
        dst = copy / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        elif os.path.isfile(src):
            shutil.copy2(src, dst)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(purelib, "_base_packages.pth"), "w") as f:
        f.write("\n".join(_site_dirs()) + "\n")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--no-build-isolation", "--no-deps", str(copy)],
        capture_output=True, text=True)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([python, "-c", SMOKE], cwd=elsewhere, capture_output=True, text=True,
                         env=dict(env, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-4000:]
    last = run.stdout.strip().splitlines()[-1]
    from pointrend_seg import model_zoo

    assert last == f"{len(model_zoo.list_configs())} (5, 61, 75) GeneralizedSemanticSegmentor"


def test_meta_architecture_knows_no_head_internals():
    """GeneralizedSemanticSegmentor runs any head through Detectron2's interface
    (``head(features, targets)``): no PointRend attribute, no coarse head, no subdivision."""
    with open(os.path.join(PACKAGE, "modeling", "meta_arch.py")) as f:
        tree = ast.parse(f.read())
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not attributes & {"coarse_head", "point_head", "subdivision_num_points", "inference",
                             "canvas_size", "output_stride", "trace_subdivision"}
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Name) and node.func.id == "hasattr"]
    assert not calls
