# The two README commands: `make demo` and `make test`. Both create .venv and install what is
# missing (torch, Detectron2, this project); stamps in .venv make a second run skip finished steps.
# `make test-d2main` runs the suite again on Detectron2's main branch (a source snapshot, see below).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEMO_CONFIG := configs/demo/deeplabv3_pointrend_synthetic.yaml
DEMO_OUT := output/demo

.PHONY: setup demo test test-quick clean-venv setup-d2main test-d2main

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-torch: | $(PY)
	$(PY) -m pip install $(TORCH_PINS)
	touch $@

$(VENV)/.stamp-detectron2: tools/install_detectron2.py $(VENV)/.stamp-torch
	$(PY) tools/install_detectron2.py
	touch $@

$(VENV)/.stamp-project: pyproject.toml $(VENV)/.stamp-detectron2
	$(PY) -m pip install --no-build-isolation -e '.[test]'
	touch $@

setup: $(VENV)/.stamp-project

# --resume: a second `make demo` continues the finished run (nothing left to train: it evaluates
# it again) instead of being refused for training over its checkpoints.
demo: setup
	$(PY) tools/train_net.py --config-file $(DEMO_CONFIG) --resume OUTPUT_DIR $(DEMO_OUT)
	$(PY) tools/demo.py --config-file $(DEMO_CONFIG) --dataset synthetic_shapes_sem_seg_val \
		--num-images 4 --output $(DEMO_OUT)/overlays MODEL.WEIGHTS $(DEMO_OUT)/model_final.pth

test: setup
	$(PY) -m pytest tests

test-quick: setup
	$(PY) -m pytest -m "not slow" tests

clean-venv:
	rm -rf $(VENV) $(D2MAIN_VENV)

# ---- Detectron2 main -------------------------------------------------------------------------
# A second virtual environment on top of .venv (it sees .venv's packages - torch, fvcore, ... -
# through one .pth line, so torch is not installed twice; pip and setuptools too) with its own
# Detectron2, built Python-only from a source snapshot of Detectron2's main branch
# (tools/install_detectron2.py --archive says which fixes it applies), and this project installed
# editable again.
D2MAIN_ARCHIVE ?= $(firstword $(wildcard ../shared/detectron2-main-*.tar.gz))
D2MAIN_VENV := .venv-d2main
D2MAIN_PY := $(D2MAIN_VENV)/bin/python
PURELIB := import sysconfig; print(sysconfig.get_paths()['purelib'])

$(D2MAIN_VENV)/.stamp: $(VENV)/.stamp-project tools/install_detectron2.py pyproject.toml
	@test -n "$(D2MAIN_ARCHIVE)" || { echo "no Detectron2 main snapshot found: make test-d2main D2MAIN_ARCHIVE=path/to/detectron2-main-<commit>.tar.gz"; exit 1; }
	$(PYTHON) -m venv --without-pip $(D2MAIN_VENV)
	$(PY) -c "$(PURELIB)" > "$$($(D2MAIN_PY) -c "$(PURELIB)")/_pointrend_seg_base_venv.pth"
	$(D2MAIN_PY) tools/install_detectron2.py --archive $(D2MAIN_ARCHIVE)
	$(D2MAIN_PY) -m pip install --no-build-isolation --no-deps -e .
	touch $@

setup-d2main: $(D2MAIN_VENV)/.stamp

test-d2main: setup-d2main
	$(D2MAIN_PY) -m pytest tests
