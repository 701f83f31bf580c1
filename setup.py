from setuptools import find_packages, setup

setup(
    name="pointrend_seg",
    version="0.1.0",
    description="PointRend on DeepLabV3 for semantic segmentation, as a Detectron2 plugin",
    packages=find_packages(include=["pointrend_seg", "pointrend_seg.*"]),
    python_requires=">=3.9",
    # torch/torchvision and Detectron2 (not on PyPI) are installed by the Makefile:
    # see tools/install_detectron2.py.
    install_requires=["numpy", "Pillow", "opencv-python-headless"],
    extras_require={"test": ["pytest"]},
)
