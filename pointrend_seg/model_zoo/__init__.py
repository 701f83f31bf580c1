"""The configs shipped with pointrend_seg, found through the installed package (as
``detectron2.model_zoo`` does), so they work from a wheel as well as from a checkout.

    from pointrend_seg import model_zoo
    cfg = model_zoo.get_config("cityscapes/deeplabv3_R103_os16_pointrend.yaml")
    lazy = model_zoo.get_config("cityscapes/deeplabv3_R103_os16_pointrend.py")  # a LazyConfig
    path = model_zoo.get_config_file("demo/deeplabv3_pointrend_synthetic.yaml")

In a checkout, ``configs/`` at the repository root is a link to this package's ``configs/``.
"""
import os
from typing import List

from ..config import load_any_config

__all__ = ["CONFIG_DIR", "get_config", "get_config_file", "list_configs"]

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def list_configs(kind: str = "yaml") -> List[str]:
    """Every shipped config of a ``kind``, "yaml" (``Base-*`` included) or "py" (``common/``
    left out), relative to the config folder (e.g. ``"demo/deeplabv3_synthetic.yaml"``), sorted."""
    found = []
    for root, _, files in os.walk(CONFIG_DIR):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), CONFIG_DIR).replace(os.sep, "/")
            if name.endswith("." + kind) and not rel.startswith("common/"):
                found.append(rel)
    return sorted(found)


def get_config_file(config_path: str) -> str:
    """Absolute path of a shipped config, ``config_path`` relative to the config folder (a
    leading ``"configs/"`` accepted), e.g. ``"cityscapes/deeplabv3_R103_os16.yaml"``.

    Raises:
        FileNotFoundError: naming the config and listing the shipped ones.
    """
    rel = config_path[len("configs/"):] if config_path.startswith("configs/") else config_path
    path = os.path.join(CONFIG_DIR, rel)
    if not os.path.isfile(path):
        shipped = [c for c in list_configs() + list_configs("py") if "Base-" not in c]
        raise FileNotFoundError(
            f"{config_path!r} is not a config shipped with pointrend_seg (looked in {CONFIG_DIR}); "
            f"available: {', '.join(shipped)}"
        )
    return path


def get_config(config_path: str, opts=()):
    """A shipped config, loaded by :func:`pointrend_seg.config.load_any_config`: a YAML one as a
    ``CfgNode`` (``opts``: ``KEY VALUE``), a Python one as a LazyConfig (``opts``: ``key=value``;
    loading runs its code)."""
    return load_any_config(get_config_file(config_path), opts)
