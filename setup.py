"""
A shim for tools that expect ``setup.py`` (``python setup.py develop``, ``--version``, Detectron2-style
scripts): everything - name, version, dependencies, package data - is in ``pyproject.toml``, which
setuptools reads. ``pip install -e .`` does not need this file.
"""
from setuptools import setup

setup()
