# The two README commands: `make demo` and `make test`. Both create .venv and install what is
# missing (torch, Detectron2, this project); stamps in .venv make a second run skip finished steps.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEMO_CONFIG := configs/demo/deeplabv3_pointrend_synthetic.yaml
DEMO_OUT := output/demo

.PHONY: setup demo test test-quick clean-venv

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

demo: setup
	$(PY) tools/train_net.py --config-file $(DEMO_CONFIG) OUTPUT_DIR $(DEMO_OUT)
	$(PY) tools/demo.py --config-file $(DEMO_CONFIG) --dataset synthetic_shapes_sem_seg_val \
		--num-images 4 --output $(DEMO_OUT)/overlays MODEL.WEIGHTS $(DEMO_OUT)/model_final.pth

test: setup
	$(PY) -m pytest tests

test-quick: setup
	$(PY) -m pytest -m "not slow" tests

clean-venv:
	rm -rf $(VENV)
