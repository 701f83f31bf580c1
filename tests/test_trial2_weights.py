"""
Weights are data (issue 24, the trial's weights findings):

1. a ``.pkl`` (MODEL.WEIGHTS on the command line or in a config) is unpickled as data only: model-zoo
   files load as Detectron2 loads them, a pickle that would call anything runs nothing;
2. ``--resume`` checks the file Detectron2 opens (main drops a URL query), and a checkpoint that
   holds a malicious pickle stops the resume instead of being skipped for an earlier one;
3. a ``.pt2`` archive that would make torch unpickle or call code is refused;
4. a tool's output is never one of its inputs;
5. the converter refuses non-finite weights and shapes that do not fit the architecture;
6. inference refuses weights that leave model tensors uninitialised, unless --partial-weights.

The run-folder tests run on Detectron2 v0.6 and main alike (``make test-d2main``).
"""
import io
import json
import logging
import os
import pickle
import re
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from pointrend_seg.engine import (
    BackboneMismatchError,
    CheckpointReadError,
    IncompleteWeightsError,
    SafeCheckpointer,
    UnsafeCheckpointError,
    build_predictor,
    load_inference_model,
)
from pointrend_seg.engine.checkpoint import load_model_zoo_pkl, load_weights_only, read_model_info
from pointrend_seg.engine.cli import run_tool
from pointrend_seg.engine.compat import checkpointer_drops_url_query
from pointrend_seg.modeling.export import UnsafeProgramError, load_exported_program

from conftest import DEMO_CONFIG, REPO_ROOT, demo_config
import tool_process

import convert_weights
import export_model

ON_MAIN = checkpointer_drops_url_query()
pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


def _tool(name, *args):
    """Run tools/NAME in a subprocess: (exit status, the stderr lines that are not warnings)."""
    proc = tool_process.tool(name, *args)
    return proc.returncode, [line for line in proc.stderr.splitlines()
                             if line.strip() and "warn" not in line.lower()]


def _one_error_line(lines, prog):
    """The single ``PROG: error: ...`` line of a tool's stderr (no traceback)."""
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    errors = [line for line in lines if line.startswith(f"{prog}: error: ")]
    assert len(errors) == 1, "\n".join(lines)
    return errors[0]


class _System:
    """Unpickling calls os.system (a shell command)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _WriteMarker:
    """Unpickling opens a file for writing (creating it)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _hostile_pkl(path, marker):
    with open(path, "wb") as f:
        pickle.dump({"model": {"backbone.stem.conv1.weight": _System(marker)},
                     "__author__": "trial"}, f)
    return str(path)


@pytest.fixture(scope="module")
def demo_weights(tmp_path_factory):
    """(path, state dict) of the demo model (MODEL.POINT_HEAD.FC_DIM 64), random weights."""
    path = tmp_path_factory.mktemp("weights") / "demo_fc64.pth"
    torch.manual_seed(0)
    state = build_model(demo_config()).state_dict()
    torch.save({"model": state}, path)
    return str(path), state


@pytest.fixture(scope="module")
def small_png(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("image") / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), np.uint8)).save(path)
    return str(path)


# ------------------------------------------------------------------------------------------------
# 1. Pickles only as data
# ------------------------------------------------------------------------------------------------
def test_model_zoo_pkl_loads_the_tensors_detectron2_loads(tmp_path, demo_weights):
    _, state = demo_weights
    arrays = {k: v.numpy() for k, v in state.items()}
    d2_file = tmp_path / "d2.pkl"
    with open(d2_file, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "Detectron2 Model Zoo"}, f)
    # numpy 1 and Python 2 era files: pickle protocol 2, numpy.core names (numpy 2 writes _core)
    old_file = tmp_path / "old.pkl"
    old = pickle.dumps({"model": arrays, "__author__": "old", "step": np.int64(9)}, protocol=2)
    old_file.write_bytes(old.replace(b"numpy._core.", b"numpy.core."))
    assert b"numpy.core.multiarray\n_reconstruct" in old_file.read_bytes()
    for path in (d2_file, old_file):
        model = build_model(demo_config())
        SafeCheckpointer(model).load(str(path))
        assert all(torch.equal(model.state_dict()[k], state[k]) for k in state), path
    # Caffe2 layout: "blobs", *_momentum dropped, matching heuristics: as Detectron2 reads it
    c2_file = tmp_path / "c2.pkl"
    with open(c2_file, "wb") as f:
        pickle.dump({"blobs": {"conv1_w": np.ones((2, 3), np.float32),
                               "conv1_w_momentum": np.zeros((2, 3), np.float32)}}, f, protocol=2)
    for path in (d2_file, c2_file):
        theirs = DetectionCheckpointer(nn.Linear(1, 1))._load_file(str(path))  # pickle.load
        ours = load_model_zoo_pkl(str(path))
        assert ours.keys() == theirs.keys() and ours["model"].keys() == theirs["model"].keys()
        assert {k: v for k, v in ours.items() if k != "model"} == {
            k: v for k, v in theirs.items() if k != "model"}
        assert all(np.array_equal(ours["model"][k], theirs["model"][k]) for k in ours["model"])


def test_hostile_pkl_in_a_yaml_config_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    weights = _hostile_pkl(tmp_path / "R-50.pkl", marker)
    config = tmp_path / "config.yaml"
    config.write_text(f'_BASE_: "{DEMO_CONFIG}"\nMODEL:\n  WEIGHTS: "{weights}"\n')
    from pointrend_seg.config import build_config

    cfg = build_config(str(config))
    for load in (build_predictor, load_inference_model):
        with pytest.raises(UnsafeCheckpointError, match="posix.system") as info:
            load(cfg)
        assert weights in str(info.value) and "\n" not in str(info.value)
    # Another global that runs code when called (open a file for writing), and one in a list.
    with open(weights, "wb") as f:
        pickle.dump({"model": {"w": [np.ones(2), _WriteMarker(str(marker))]}, "__author__": "t"},
                    f, protocol=2)
    with pytest.raises(UnsafeCheckpointError, match="builtins.open|io.open"):
        load_inference_model(cfg)
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("tool, args", [
    ("demo.py", ["--input", "IMAGE", "--output", "OUT"]),
    ("export_model.py", ["--output", "OUT", "--no-check"]),
])
def test_hostile_pkl_runs_nothing_in_the_tools(tmp_path, small_png, tool, args):
    marker = tmp_path / "pwned"
    weights = _hostile_pkl(tmp_path / "weights.pkl", marker)
    args = [small_png if a == "IMAGE" else str(tmp_path / "out") if a == "OUT" else a
            for a in args]
    status, lines = _tool(tool, "--config-file", DEMO_CONFIG, *args, "MODEL.WEIGHTS", weights)
    line = _one_error_line(lines, tool)
    assert status == 2 and weights in line and "posix.system" in line, lines
    assert not marker.exists()


def test_a_folder_given_as_weights_is_one_error_naming_it(tmp_path, small_png, capsys):
    """--weights / MODEL.WEIGHTS that is a folder: one error naming it and the file to give (and
    --run for a run folder); the tools end with one line, exit 2. Before: fvcore's
    "AssertionError: Checkpoint DIR not found!" and a traceback, exit 1."""
    import demo

    folder = tmp_path / "wdir"
    folder.mkdir()
    expected = (f"checkpoint {folder} is a folder; give the checkpoint file, e.g. "
                f"{folder / 'model_final.pth'}")
    with pytest.raises(CheckpointReadError) as info:
        load_inference_model(demo_config(), weights=str(folder))
    assert str(info.value) == expected
    (folder / "last_checkpoint").write_text("model_0000009.pth")  # a run folder
    expected += (" (it is a run folder: tools/demo.py and tools/export_model.py take it whole as "
                 f"--run {folder})")
    with pytest.raises(CheckpointReadError) as info:
        build_predictor(demo_config("MODEL.WEIGHTS", str(folder)))
    assert str(info.value) == expected
    for tool, argv in [
            (demo, ["--input", small_png, "--output", str(tmp_path / "pictures")]),
            (export_model, ["--output", str(tmp_path / "exported"), "--no-check"])]:
        status = run_tool(lambda: tool.main(["--config-file", DEMO_CONFIG, "--weights",
                                             str(folder), *argv]), prog="tool.py")
        line = capsys.readouterr().err.splitlines()[-1]
        assert status == 2 and line.endswith(f".py: error: {expected}"), line
    assert not (tmp_path / "exported").exists()


def test_weights_at_an_unreachable_address_are_one_error_naming_the_key(tmp_path, small_png,
                                                                       capsys):
    """MODEL.WEIGHTS at a URL that cannot be downloaded (no network; here port 9 of this machine,
    which refuses the connection: nothing leaves it): one error naming the key, the URL and the
    reason, and what to do. Before: a URLError traceback."""
    import demo

    url = "http://127.0.0.1:9/x.pth"
    expected = (f"cannot download the weights {url} (MODEL.WEIGHTS; Python config: "
                "train.init_checkpoint): [Errno 111] Connection refused. Download the file")
    with pytest.raises(CheckpointReadError, match=re.escape(expected)) as info:
        SafeCheckpointer(nn.Linear(3, 2)).load(url)
    assert "give its local path as MODEL.WEIGHTS (train.init_checkpoint)" in str(info.value)
    status = run_tool(lambda: demo.main(["--config-file", DEMO_CONFIG, "--weights", url,
                                         "--input", small_png, "--output", str(tmp_path / "out")]),
                      prog="demo.py")
    line = capsys.readouterr().err.splitlines()[-1]
    assert status == 2 and line.startswith(f"demo.py: error: {expected}"), line


# ------------------------------------------------------------------------------------------------
# 2. --resume: the file Detectron2 opens, and no skipping past an unsafe checkpoint
# ------------------------------------------------------------------------------------------------
def _run_folder_with_query(folder, marker):
    """A run folder whose last_checkpoint names a .pkl behind a URL query (what the trial
    wrote): Detectron2 main opens model_0000005.pkl, v0.6 a file that does not exist."""
    os.makedirs(folder, exist_ok=True)
    _hostile_pkl(os.path.join(folder, "model_0000005.pkl"), marker)
    with open(os.path.join(folder, "last_checkpoint"), "w") as f:
        f.write("model_0000005.pkl?matching_heuristics=True")
    return str(folder)


def test_last_checkpoint_with_a_query_is_checked_as_opened(tmp_path):
    marker = tmp_path / "pwned"
    out = _run_folder_with_query(tmp_path / "run", marker)
    # --resume of YAML training (the trainer's checkpointer) and of --eval-only
    model = nn.Linear(3, 2)
    with pytest.raises(UnsafeCheckpointError, match="names a .pkl file") as info:
        SafeCheckpointer(model, out).resume_or_load("", resume=True)
    assert os.path.join(out, "model_0000005.pkl") in str(info.value)
    with pytest.raises(UnsafeCheckpointError, match="model_0000005.pkl"):
        load_inference_model(demo_config("OUTPUT_DIR", out), resume=True)
    # Python-config --resume (the same loader; the trainer uses the same resume_or_load)
    from pointrend_seg import model_zoo

    lazy = model_zoo.get_config("demo/deeplabv3_pointrend_synthetic.py",
                                [f"train.output_dir={out}", "train.device=cpu"])
    with pytest.raises(UnsafeCheckpointError, match="model_0000005.pkl"):
        load_inference_model(lazy, resume=True)
    # URLs and other folders, with or without a query
    for named in ("https://example.com/model.pth", "file:///etc/model.pth",
                  "detectron2://ImageNetPretrained/MSRA/R-50.pkl", "model.pth?x=/../../a.pth",
                  "../run2/model_final.pth?matching_heuristics=True"):
        with open(os.path.join(out, "last_checkpoint"), "w") as f:
            f.write(named)
        with pytest.raises(UnsafeCheckpointError, match="not a file of|names a .pkl"):
            SafeCheckpointer(model, out).resume_or_load("", resume=True)
    assert not marker.exists()


@pytest.mark.slow
def test_train_net_resume_with_a_query_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    out = _run_folder_with_query(tmp_path / "run", marker)
    status, lines = _tool("train_net.py", "--config-file", DEMO_CONFIG, "--resume",
                          "SOLVER.MAX_ITER", "2", "DATALOADER.NUM_WORKERS", "0",
                          "OUTPUT_DIR", out)
    line = _one_error_line(lines, "train_net.py")
    assert status == 2 and "model_0000005.pkl" in line, lines
    assert not marker.exists()


def _save_legacy(obj, path):
    torch.save(obj, path, _use_new_zipfile_serialization=False)


def _save_plain_pickle(obj, path):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


@pytest.mark.parametrize("save", [torch.save, _save_legacy, _save_plain_pickle],
                         ids=["zip", "legacy", "plain_pickle"])
def test_malicious_checkpoint_stops_the_resume_instead_of_being_skipped(tmp_path, save):
    SafeCheckpointer(nn.Linear(3, 2), str(tmp_path)).save("model_0000004", iteration=4)
    marker = tmp_path / "pwned"
    latest = tmp_path / "model_0000009.pth"
    save({"model": nn.Linear(3, 2).state_dict(), "x": _WriteMarker(str(marker))}, latest)
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    with pytest.raises(UnsafeCheckpointError, match="builtins.open|io.open") as info:
        SafeCheckpointer(nn.Linear(3, 2), str(tmp_path)).resume_or_load("", resume=True)
    assert str(latest) in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("save", [torch.save, _save_legacy], ids=["zip", "legacy"])
def test_truncated_checkpoint_still_falls_back(tmp_path, save, caplog):
    SafeCheckpointer(nn.Linear(3, 2), str(tmp_path)).save("model_0000004", iteration=4)
    latest = tmp_path / "model_0000009.pth"
    save({"model": nn.Linear(3, 2).state_dict(), "iteration": 9}, latest)
    # cut inside the pickle: a legacy file then names a global whose name is cut short
    latest.write_bytes(latest.read_bytes()[:240])
    (tmp_path / "last_checkpoint").write_text("model_0000009.pth")
    with caplog.at_level(logging.WARNING):
        extra = SafeCheckpointer(nn.Linear(3, 2), str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 4 and str(latest) in caplog.text


def test_init_weights_url_query(tmp_path):
    """``x.pth?matching_heuristics=True`` (the ViTDet configs' init_checkpoint): Detectron2 main
    matches names by suffix, as with its own reader; v0.6 has no such query: the file is
    not found (before: an AssertionError deep in fvcore)."""
    model = nn.Module()
    model.backbone = nn.Module()
    model.backbone.net = nn.Linear(3, 2)
    path = str(tmp_path / "mae.pth")
    torch.save({"model": {"net.weight": torch.ones(2, 3), "net.bias": torch.ones(2)}}, path)
    with pytest.raises(BackboneMismatchError):
        SafeCheckpointer(model).load(path)
    if ON_MAIN:
        SafeCheckpointer(model).load(path + "?matching_heuristics=True")
        assert torch.equal(model.backbone.net.weight, torch.ones(2, 3))
    else:
        with pytest.raises(FileNotFoundError, match=r"mae.pth\?matching_heuristics"):
            SafeCheckpointer(model).load(path + "?matching_heuristics=True")


# ------------------------------------------------------------------------------------------------
# 3. Exported programs
# ------------------------------------------------------------------------------------------------
class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x).relu()


@pytest.fixture(scope="module")
def tiny_program(tmp_path_factory):
    """(path, {member: bytes}, root folder) of a torch.export archive of a small network."""
    path = tmp_path_factory.mktemp("program") / "model.pt2"
    torch.export.save(torch.export.export(_Tiny().eval(), (torch.rand(1, 3, 8, 8),)), path)
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    return str(path), members, next(iter(members)).split("/")[0]


def _pickled(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _crafted(members, root, change):
    members = dict(members)
    change(members, root)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _use_pickle_weight(marker):
    def change(m, root):
        config = f"{root}/data/weights/model_weights_config.json"
        weights = json.loads(m[config])
        entry = weights["config"]["conv.bias"]
        entry["use_pickle"] = True
        m[config] = json.dumps(weights).encode()
        m[f"{root}/data/weights/{entry['path_name']}"] = _pickled({"x": _WriteMarker(marker)})
    return change


def _sample_inputs(marker):
    def change(m, root):
        m[f"{root}/data/sample_inputs/model.pt"] = _pickled({"x": _WriteMarker(marker)})
    return change


def _opaque_constant(marker):
    def change(m, root):
        m[f"{root}/data/constants/model_constants_config.json"] = json.dumps({"config": {"c": {
            "path_name": "opaque_obj_0", "is_param": False, "use_pickle": False,
            "tensor_meta": None}}}).encode()
        m[f"{root}/data/constants/opaque_obj_0"] = pickle.dumps(_WriteMarker(marker))
    return change


def _legacy_weights(marker):
    def change(m, root):
        m[f"{root}/data/weights/model.pt"] = _pickled({"x": _WriteMarker(marker)})
    return change


def _call_target(marker):
    def change(m, root):
        program = json.loads(m[f"{root}/models/model.json"])
        program["graph_module"]["graph"]["nodes"].insert(0, {
            "target": "torch.os.system", "outputs": [], "metadata": {},
            "inputs": [{"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}]})
        m[f"{root}/models/model.json"] = json.dumps(program).encode()
    return change


def _aoti(marker):
    def change(m, root):
        m[f"{root}/data/aotinductor/model/model.so"] = b"\x7fELF"
    return change


@pytest.mark.parametrize("craft, member", [
    (_use_pickle_weight, "model_weights_config.json (conv.bias"),
    (_sample_inputs, "data/sample_inputs/model.pt"),
    (_opaque_constant, "opaque_obj_0"),
    (_legacy_weights, "data/weights/model.pt"),
    (_call_target, "'torch.os.system'"),
    (_aoti, "data/aotinductor/model/model.so"),
])
def test_crafted_program_archive_is_refused(tmp_path, tiny_program, craft, member):
    path, members, root = tiny_program
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.pt2"
    crafted.write_bytes(_crafted(members, root, craft(str(marker))))
    with pytest.raises(UnsafeProgramError) as info:
        load_exported_program(str(crafted))
    assert str(crafted) in str(info.value) and member in str(info.value), str(info.value)
    assert not marker.exists()


def test_exported_program_loads_and_runs(tiny_program):
    path, _, _ = tiny_program
    x = torch.rand(1, 3, 8, 8)
    ours = load_exported_program(path).module()(x)
    torch.testing.assert_close(ours, torch.export.load(path).module()(x), rtol=0, atol=0)
    with pytest.raises(UnsafeProgramError, match="not a torch.export archive"):
        load_exported_program(os.path.join(REPO_ROOT, "README.md"))


def test_torch_export_load_runs_a_crafted_archive(tmp_path, tiny_program):
    """Why load_exported_program exists: torch 2.14's own loader runs the archive's pickle."""
    _, members, root = tiny_program
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.pt2"
    crafted.write_bytes(_crafted(members, root, _sample_inputs(str(marker))))
    logging.getLogger("torch._export.serde.serialize").disabled = True  # its fallback warning
    try:
        torch.export.load(str(crafted))
    except Exception:
        pass
    finally:
        logging.getLogger("torch._export.serde.serialize").disabled = False
    assert marker.exists()  # if torch stops doing this, the docs' warning can be relaxed


# ------------------------------------------------------------------------------------------------
# 4. Inputs are never outputs
# ------------------------------------------------------------------------------------------------
def test_convert_weights_refuses_to_overwrite_its_input(tmp_path, capsys):
    src = tmp_path / "a.pth"
    torch.save({"conv1.weight": torch.ones(1)}, src)
    before = src.read_bytes()
    status, lines = _tool("convert_weights.py", str(src), str(src))
    line = _one_error_line(lines, "convert_weights.py")
    assert status == 2 and f"{src} is the input" in line
    (tmp_path / "sym.pth").symlink_to(src)
    os.link(src, tmp_path / "hard.pth")
    for out in ("sym.pth", "hard.pth"):
        assert run_tool(lambda: convert_weights.main([str(src), str(tmp_path / out)]),
                        prog="convert_weights.py") == 2
        assert "is the input" in capsys.readouterr().err
    assert src.read_bytes() == before


def test_export_refuses_an_output_over_its_weights_or_config(tmp_path, demo_weights, capsys):
    out = tmp_path / "exported"
    out.mkdir()
    weights = out / "model.pt2"  # the weights where the program would be written
    weights.write_bytes(open(demo_weights[0], "rb").read())
    config = tmp_path / "config.yaml"
    config.write_text(f'_BASE_: "{DEMO_CONFIG}"\n')
    (out / "export.json").symlink_to(config)  # the config behind a link
    before = weights.read_bytes(), config.read_bytes()
    for opts in (["MODEL.WEIGHTS", str(weights)], ["MODEL.WEIGHTS", demo_weights[0]]):
        status = export_model.main(["--config-file", str(config), "--output", str(out),
                                    "--no-check", *opts])
        err = capsys.readouterr().err
        assert status == 2 and "would replace the input" in err
        assert ("weights file" if opts[1] == str(weights) else "config file") in err
    assert (weights.read_bytes(), config.read_bytes()) == before


# ------------------------------------------------------------------------------------------------
# 5. The converter refuses what can only be wrong
# ------------------------------------------------------------------------------------------------
def _convert(tmp_path, state, capsys):
    src, out = tmp_path / "in.pth", tmp_path / "out.pth"
    torch.save(state, src)
    status = run_tool(lambda: convert_weights.main([str(src), str(out)]),
                      prog="convert_weights.py")
    err = capsys.readouterr().err.strip()
    assert not out.exists() and len(err.splitlines()) == 1
    return status, err


def test_converter_refuses_wrong_shapes_and_non_finite_weights(tmp_path, capsys):
    pytest.importorskip("timm")
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    swin = SwinTransformer(img_size=224, embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8),
                           window_size=7, num_classes=0).state_dict()
    swin["layers.1.blocks.0.attn.qkv.weight"] = torch.zeros(3 * 64, 63)  # C = 64 in stage 1
    status, err = _convert(tmp_path, swin, capsys)
    assert status == 2 and "layers.1.blocks.0.attn.qkv.weight is [192, 63], expected [192, 64]" in err
    vit = VisionTransformer(img_size=224, patch_size=16, embed_dim=64, depth=2, num_heads=2,
                            num_classes=0).state_dict()
    vit["blocks.1.mlp.fc1.weight"] = torch.zeros(256, 65)
    status, err = _convert(tmp_path, vit, capsys)
    assert status == 2 and "1 tensors do not fit the ViT (embedding dim 64" in err
    nan = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
           for k, v in VisionTransformer(img_size=224, patch_size=16, embed_dim=64, depth=2,
                                         num_heads=2, num_classes=0).state_dict().items()}
    status, err = _convert(tmp_path, nan, capsys)
    assert status == 2 and f"of its {len(nan)} tensors hold NaN" in err and "cls_token" in err


def test_converter_refuses_a_resnet_of_infinite_weights(tmp_path, capsys):
    torchvision = pytest.importorskip("torchvision")
    state = torchvision.models.resnet50().state_dict()
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = float("inf")
    status, err = _convert(tmp_path, state, capsys)
    assert status == 2 and "1 of its" in err and "layer2.0.conv1.weight" in err


# ------------------------------------------------------------------------------------------------
# 6. Weights that do not fill the model (before: --eval-only reported a random head's mIoU)
# ------------------------------------------------------------------------------------------------
def test_inference_refuses_weights_that_leave_tensors_uninitialised(tmp_path, demo_weights):
    path, state = demo_weights
    cfg = demo_config("MODEL.WEIGHTS", path, "MODEL.POINT_HEAD.FC_DIM", "128")
    for load in (load_inference_model, build_predictor):
        with pytest.raises(IncompleteWeightsError) as info:
            load(cfg)
        message = str(info.value)
        assert path in message and "have another shape in it" in message and "--partial" in message
        assert "[64, " in message and "[128, " in message and "\n" not in message
    # with the flag: loaded, the tensors that fit filled
    model = load_inference_model(cfg, partial_weights=True)
    assert torch.equal(model.state_dict()["backbone.stem.conv1.weight"],
                       state["backbone.stem.conv1.weight"])
    # a missing tensor counts too
    dropped = "sem_seg_head.coarse_head.predictor.weight"
    torch.save({"model": {k: v for k, v in state.items() if k != dropped}},
               tmp_path / "missing.pth")
    with pytest.raises(IncompleteWeightsError, match=r"1 are not in it \(sem_seg_head.coarse"):
        SafeCheckpointer(build_model(demo_config()), require_all_weights=True).load(
            str(tmp_path / "missing.pth"))
    # training starts from partial weights (e.g. ImageNet backbones) as before
    SafeCheckpointer(build_model(cfg)).load(path)


@pytest.mark.slow
def test_eval_only_refuses_and_demo_runs_with_partial_weights(tmp_path, demo_weights, small_png):
    path, _ = demo_weights
    status, lines = _tool("train_net.py", "--config-file", DEMO_CONFIG, "--eval-only",
                          "MODEL.WEIGHTS", path, "MODEL.POINT_HEAD.FC_DIM", "128",
                          "OUTPUT_DIR", str(tmp_path / "eval"))
    line = _one_error_line(lines, "train_net.py")
    assert status == 2 and path in line and "sem_seg_head.point_head" in line
    assert not os.path.exists(tmp_path / "eval" / "eval_results.json")
    status, lines = _tool("demo.py", "--config-file", DEMO_CONFIG, "--input", small_png,
                          "--output", str(tmp_path / "demo"), "--partial-weights",
                          "MODEL.WEIGHTS", path, "MODEL.POINT_HEAD.FC_DIM", "128")
    assert status == 0, lines
    assert os.listdir(tmp_path / "demo")



# ------------------------------------------------------------------------------------------------
# 7. No weights, or weights that are not numbers a model can use (the hostile-input audit:
#    --eval-only reported an mIoU for an empty MODEL.WEIGHTS and for NaN weights, exit 0)
# ------------------------------------------------------------------------------------------------
def test_inference_refuses_to_evaluate_without_weights(tmp_path):
    from pointrend_seg import model_zoo
    from pointrend_seg.config import ConfigError

    with pytest.raises(ConfigError, match=r"^MODEL.WEIGHTS is empty: there are no weights"):
        load_inference_model(demo_config("MODEL.WEIGHTS", ""))
    out = str(tmp_path / "empty_run")
    with pytest.raises(ConfigError, match=f"^MODEL.WEIGHTS is empty and {out} has no "
                                          "last_checkpoint"):
        load_inference_model(demo_config("OUTPUT_DIR", out), resume=True)
    with pytest.raises(ConfigError, match=r"^train.init_checkpoint is empty.*"
                                          r"train.init_checkpoint=output/model_final.pth"):
        load_inference_model(model_zoo.get_config("demo/deeplabv3_pointrend_synthetic.py",
                                                  ["train.device=cpu"]))


def test_eval_only_without_weights_writes_nothing(tmp_path):
    # Before: refused only after setup had written eval_config.yaml and log.txt into the folder.
    out = tmp_path / "eval"
    status, lines = _tool("train_net.py", "--config-file", DEMO_CONFIG, "--eval-only",
                          "MODEL.WEIGHTS", "", "OUTPUT_DIR", str(out))
    line = _one_error_line(lines, "train_net.py")
    assert status == 2 and "MODEL.WEIGHTS is empty" in line
    assert not [name for name in os.listdir(out) if not name.startswith(".")]


@pytest.mark.parametrize("spoil, message", [
    (lambda s: {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                for k, v in s.items()}, r"model weight 'backbone\.\S+' holds NaN or inf"),
    (lambda s: {**s, "sem_seg_head.coarse_head.predictor.bias": torch.full((5,), float("inf"))},
     r"model weight 'sem_seg_head.coarse_head.predictor.bias' holds NaN or inf values \(1 of its"),
    (lambda s: {k: v.long() for k, v in s.items()},
     r"model weight 'backbone\.\S+' is a torch.int64 tensor where the model holds torch.float32"),
    (lambda s: "hello", r"its 'model' is a str, not a state dict"),
    (lambda s: {k: 1 for k in s}, r"model weight 'backbone\.\S+' is of type int, not a tensor"),
])
def test_weights_that_are_not_finite_numbers_are_refused_naming_the_file_and_key(
        tmp_path, demo_weights, spoil, message):
    """Every load passes SafeCheckpointer._load_model: MODEL.WEIGHTS for training and
    inference, --resume. Before: NaN / inf / int64 weights evaluated to an mIoU (exit 0) and
    trained into a non-finite loss; a string was an AttributeError, an int fvcore's
    "Unsupported type found in checkpoint!" without the file."""
    _, state = demo_weights
    path = str(tmp_path / "spoilt.pth")
    torch.save({"model": spoil(state)}, path)
    with pytest.raises(CheckpointReadError, match=f"^{path}: {message}") as info:
        SafeCheckpointer(build_model(demo_config())).resume_or_load(path, resume=False)
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointReadError, match=message):
        load_inference_model(demo_config("MODEL.WEIGHTS", path))


def test_a_compressed_zip_checkpoint_is_refused_before_it_is_unpacked(tmp_path):
    """A torch zip whose data entry is 64 MB of deflated zeros (~64 KB): before, torch.load
    unpacked it whole and then refused it ('record size does not match'; 2.8 GB for 2 GiB of
    zeros). torch.save stores entries uncompressed; the zip directory says what an entry holds."""
    tiny, bomb = tmp_path / "tiny.pth", str(tmp_path / "bomb.pth")
    torch.save({"model": {"w": torch.zeros(4)}}, tiny)
    with zipfile.ZipFile(tiny) as src, zipfile.ZipFile(bomb, "w") as dst:
        for name in src.namelist():
            entry = zipfile.ZipInfo(name)
            if name.endswith("data/0"):
                entry.compress_type = zipfile.ZIP_DEFLATED
                with dst.open(entry, "w") as f:
                    for _ in range(64):
                        f.write(bytes(1 << 20))
            else:
                dst.writestr(entry, src.read(name))
    assert os.path.getsize(bomb) < 1 << 20
    with pytest.raises(CheckpointReadError, match=f"^refused to load {bomb}: its zip entry "
                       r"tiny/data/0 is compressed \(\d+ bytes that unpack to 67108864\)"):
        SafeCheckpointer(nn.Linear(2, 2)).resume_or_load(bomb, resume=False)
    assert read_model_info(bomb) == {}
    assert torch.equal(load_weights_only(str(tiny))["model"]["w"], torch.zeros(4))  # stored: read
