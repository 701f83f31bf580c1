#!/usr/bin/env python
"""Install Detectron2 into the running Python environment.

Detectron2 is not published on PyPI. By default this script builds the registry sdist
``pb1-detectron2==0.6`` (Detectron2 v0.6, only the distribution name changed, shipped without its
C++/CUDA sources) as a pure-Python package and applies the compatibility fixes that v0.6 needs on
current torch / numpy / Pillow:

1. no compiled extension (``ext_modules=[]``), built with ``--no-build-isolation``;
2. ``from detectron2 import _C`` made lazy in the four modules that import it at module level
   (a clear error is raised only if a compiled op is actually called);
3. ``Image.LINEAR`` (removed in Pillow 10) -> ``Image.BILINEAR``;
4. the removed numpy aliases ``np.int`` / ``np.float`` / ``np.bool`` -> builtins;
5. ``engine/launch.py`` learns CPU runs: gloo backend and no ``torch.cuda.set_device`` without a GPU.

``--archive PATH`` builds a Detectron2 source archive instead (a ``.tar.gz`` of the repository,
e.g. the snapshot of Detectron2 ``main`` used by ``make test-d2main``), Python-only, with only the
fixes that ``main`` still needs:

1. no compiled extension (``ext_modules=[]``; its ``setup.py`` always builds the C++ sources);
2. lazy ``detectron2._C`` in ``evaluation/fast_eval_api.py``, the one module that still imports
   it at module level (``layers/deform_conv.py`` already guards its import).

``main`` needs none of the other v0.6 fixes (Pillow, numpy aliases, CPU ``launch`` are fixed
upstream); each fix fails loudly if its target text is not found exactly once.

Set ``DETECTRON2_SOURCE`` to anything pip accepts (a git URL such as
``git+https://github.com/facebookresearch/detectron2.git`` or a local checkout of Detectron2 main)
to install that instead; then no fix is applied.

The script is idempotent: it does nothing when the requested Detectron2 is already installed
(``--force`` rebuilds). It fails with a non-zero exit code if Detectron2 does not import afterwards.
The built wheel is kept in ``.cache/wheels/`` (it is pure Python, so it also installs on other
machines, e.g. a GPU box without registry access).
"""
import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
# Bump when the fixes below change, so that an old build is replaced.
LOCAL_VERSION = "pyonly1"
INSTALLED_VERSION = f"{SDIST_VERSION}+{LOCAL_VERSION}"

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE = REPO_ROOT / ".cache"
STAMP_NAME = "pointrend_seg_detectron2_source.json"

LAZY_C = '''class _LazyCompiledOps:
    """Stands in for ``detectron2._C`` in a Python-only build; fails only when an op is used."""

    def __getattr__(self, name):
        try:
            from detectron2 import _C as compiled
        except ImportError as e:
            raise ImportError(
                f"detectron2._C.{name} is a compiled op, and this Detectron2 was installed "
                "Python-only (tools/install_detectron2.py). Install Detectron2 with its "
                "extensions to use it."
            ) from e
        return getattr(compiled, name)


_C = _LazyCompiledOps()
'''

LAUNCH_OLD_ASSERT = (
    '    assert torch.cuda.is_available(), "cuda is not available. Please check your installation."\n'
)
LAUNCH_NEW_ASSERT = "    has_gpu = torch.cuda.is_available()\n"
LAUNCH_OLD_BACKEND = '            backend="NCCL",\n'
LAUNCH_NEW_BACKEND = '            backend="NCCL" if has_gpu else "GLOO",\n'
LAUNCH_OLD_DEVICE = (
    "    assert num_gpus_per_machine <= torch.cuda.device_count()\n"
    "    torch.cuda.set_device(local_rank)\n"
)
LAUNCH_NEW_DEVICE = (
    "    if has_gpu:\n"
    "        assert num_gpus_per_machine <= torch.cuda.device_count()\n"
    "        torch.cuda.set_device(local_rank)\n"
)


def log(msg):
    print(f"[install_detectron2] {msg}", flush=True)


def replace_exactly(path: Path, old: str, new: str, count: int = 1):
    """Replace ``old`` by ``new`` in ``path``; fail loudly unless it occurs ``count`` times."""
    text = path.read_text()
    found = text.count(old)
    if found != count:
        raise SystemExit(f"fix does not apply to {path}: expected {count}x {old!r}, found {found}")
    path.write_text(text.replace(old, new))


def apply_compat_fixes(src: Path):
    """Apply the five fixes listed in the module docstring to an extracted v0.6 sdist."""
    # 1. no compiled extension; 2. lazy detectron2._C (fast_eval_api.py as in main, then three more)
    apply_main_fixes(src)
    for rel in [
        "detectron2/layers/deform_conv.py",
        "detectron2/layers/rotated_boxes.py",
        "detectron2/layers/roi_align_rotated.py",
    ]:
        replace_exactly(src / rel, "from detectron2 import _C\n", LAZY_C)
    # 3. Pillow 10 removed Image.LINEAR
    replace_exactly(
        src / "detectron2/data/transforms/transform.py", "interp=Image.LINEAR", "interp=Image.BILINEAR"
    )
    # 4. numpy 1.24 removed np.int / np.float / np.bool (np.int64 etc. are untouched)
    alias = re.compile(r"\bnp\.(int|float|bool)\b(?![\w.])")
    fixed = []
    for py in sorted(list((src / "detectron2").rglob("*.py")) + list((src / "projects").rglob("*.py"))):
        text = py.read_text()
        new_text = alias.sub(lambda m: m.group(1), text)
        if new_text != text:
            py.write_text(new_text)
            fixed.append(str(py.relative_to(src)))
    for required in [
        "detectron2/evaluation/sem_seg_evaluation.py",
        "detectron2/structures/masks.py",
        "detectron2/evaluation/pascal_voc_evaluation.py",
    ]:
        if required not in fixed:
            raise SystemExit(f"fix does not apply: no numpy alias found in {required}")
    # 5. CPU-capable launch (gloo, no set_device without a GPU)
    launch = src / "detectron2/engine/launch.py"
    replace_exactly(launch, LAUNCH_OLD_ASSERT, LAUNCH_NEW_ASSERT)
    replace_exactly(launch, LAUNCH_OLD_BACKEND, LAUNCH_NEW_BACKEND)
    replace_exactly(launch, LAUNCH_OLD_DEVICE, LAUNCH_NEW_DEVICE)
    log("applied the 5 compatibility fixes: no compiled extension; lazy detectron2._C; "
        f"Image.LINEAR -> Image.BILINEAR; numpy aliases (in {len(fixed)} files); CPU-capable "
        "launch")


def apply_main_fixes(src: Path):
    """Apply the two fixes of a Detectron2 ``main`` source tree (module docstring)."""
    replace_exactly(src / "setup.py", "ext_modules=get_extensions(),", "ext_modules=[],")
    replace_exactly(src / "detectron2/evaluation/fast_eval_api.py", "from detectron2 import _C\n",
                    LAZY_C)


def extract(archive: Path, build: Path):
    """``archive`` (a .tar.gz) extracted into the emptied folder ``build``."""
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(build, filter="data")


def pip_wheel(src: Path, wheels: Path, suffix: str, pattern: str) -> Path:
    """The wheel of the source tree ``src`` (version suffix ``suffix``), built into ``wheels``
    after the earlier wheels there (``pattern``) are deleted."""
    wheels.mkdir(parents=True, exist_ok=True)
    for old in wheels.glob(pattern):
        old.unlink()
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
           "-w", str(wheels), str(src)]
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, env=dict(os.environ, D2_VERSION_SUFFIX=suffix))
    (wheel,) = wheels.glob(pattern)
    return wheel


def install_wheel(wheel: Path):
    pip("install", "--force-reinstall", "--no-deps", str(wheel))
    # dependencies come from the registry; --force-reinstall above touches detectron2 only.
    # Detectron2 leaves OpenCV to the user; its PointRend project imports cv2.
    pip("install", str(wheel), "opencv-python-headless")
    log(f"installed {wheel.name}")


def build_archive_wheel(archive: Path) -> Path:
    """Extract a Detectron2 source archive, apply :func:`apply_main_fixes`, build a wheel."""
    if not archive.is_file():
        raise SystemExit(f"--archive {archive}: no such file")
    build = CACHE / "build-archive"
    extract(archive, build)
    roots = [p.parent for p in build.glob("*/setup.py")]
    if len(roots) != 1 or not (roots[0] / "detectron2").is_dir():
        raise SystemExit(f"{archive}: expected one top-level folder with setup.py and detectron2/")
    src = roots[0]
    apply_main_fixes(src)
    log("applied the fixes for a Detectron2 main tree (no extension, lazy _C)")
    return pip_wheel(src, CACHE / "wheels-archive",
                     f"+{LOCAL_VERSION}.{src.name.replace('-', '.')}", "detectron2-*.whl")


def install_archive(archive: Path, force: bool):
    """Install the Detectron2 of a source archive (Python-only, main fixes) unless the same
    archive (by sha256) is installed already."""
    digest = sha256(archive)
    stamp = stamp_path()
    recorded = json.loads(stamp.read_text()) if stamp.exists() else {}
    if recorded.get("archive_sha256") == digest and not force:
        log(f"detectron2 from {archive.name} already installed; nothing to do")
        return
    install_wheel(build_archive_wheel(archive))
    stamp.write_text(json.dumps({"archive": str(archive), "archive_sha256": digest}))


def pip(*args):
    cmd = [sys.executable, "-m", "pip", *args]
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_sdist() -> Path:
    dest = CACHE / "sdist"
    archive = dest / f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"
    if not archive.exists():
        dest.mkdir(parents=True, exist_ok=True)
        # setup.py imports torch, hence no build isolation even for the metadata step.
        pip("download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
            "-d", str(dest), f"{SDIST_NAME}=={SDIST_VERSION}")
    digest = sha256(archive)
    if digest != SDIST_SHA256:
        archive.unlink()
        raise SystemExit(f"{archive}: sha256 {digest} != expected {SDIST_SHA256}; deleted, run again")
    return archive


def build_wheel() -> Path:
    archive = download_sdist()
    extract(archive, CACHE / "build")
    src = CACHE / "build" / f"{SDIST_NAME}-{SDIST_VERSION}"
    apply_compat_fixes(src)
    return pip_wheel(src, CACHE / "wheels", f"+{LOCAL_VERSION}", "pb1_detectron2-*.whl")


def installed_version():
    try:
        return importlib.metadata.version(SDIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        return None


def stamp_path() -> Path:
    return Path(sys.prefix) / STAMP_NAME


def verify_import():
    code = (
        "import detectron2, detectron2.engine, detectron2.evaluation, detectron2.modeling;"
        "import detectron2.projects.point_rend, detectron2.projects.deeplab;"
        "print(detectron2.__version__, detectron2.__file__)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit("Detectron2 was installed but does not import (see the error above)")
    log(f"detectron2 imports: {res.stdout.strip()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild and reinstall")
    parser.add_argument("--wheel-only", action="store_true",
                        help="build the patched wheel into .cache/wheels without installing it")
    parser.add_argument("--archive", type=Path,
                        help="install this Detectron2 source archive (.tar.gz, e.g. a snapshot "
                             "of main) instead of the v0.6 sdist")
    args = parser.parse_args()

    if args.archive:
        install_archive(args.archive.resolve(), args.force)
        verify_import()
        return

    source = os.environ.get("DETECTRON2_SOURCE", "").strip()
    if source:
        stamp = stamp_path()
        recorded = json.loads(stamp.read_text()).get("source") if stamp.exists() else None
        if recorded == source and not args.force:
            log(f"detectron2 from {source} already installed; nothing to do")
        else:
            log(f"installing detectron2 from DETECTRON2_SOURCE={source} (no fixes applied)")
            pip("install", "--no-build-isolation", source)
            stamp.write_text(json.dumps({"source": source}))
        verify_import()
        return

    if args.wheel_only:
        log(f"built {build_wheel()}")
        return
    if installed_version() == INSTALLED_VERSION and not args.force:
        log(f"{SDIST_NAME} {INSTALLED_VERSION} already installed; nothing to do")
    else:
        install_wheel(build_wheel())
        stamp_path().unlink(missing_ok=True)
    verify_import()


if __name__ == "__main__":
    main()
