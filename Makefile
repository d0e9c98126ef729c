# Each target creates .venv and installs what it needs, so each works alone on a fresh clone:
# `make demo` the core dependencies only (the demo is CartPole), `make test` every extra the
# tests exercise. One stamp per install set, so `make demo` never installs Ray, MuJoCo or
# Atari, and `make test` after it adds only the extras.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The extras the tests import (box2d, mujoco, atari, minigrid, metaworld, robotics:
# gymnasium-robotics, ray, minari, hub, contrib, notebook: pandas); dev is pytest, ruff and
# the build backend test_setup.py runs.
TEST_EXTRAS := dev,box2d,mujoco,atari,minigrid,metaworld,robotics,ray,minari,hub,contrib,notebook
CORE_STAMP  := $(VENV)/.installed-core
DEV_STAMP   := $(VENV)/.installed-dev
TEST_STAMP  := $(VENV)/.installed-test
# setuptools says "Editable installation." (an information note, not a problem) for any
# project whose packages live in more than one folder (here envs/ is rltransfer.envs).
PIP := PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install --quiet
# The study `make tensorboard` shows: STUDY=runs/<study>, else the newest study in runs/.
STUDY ?= $(patsubst %/study.json,%,$(firstword $(shell ls -t runs/*/study.json 2>/dev/null)))

.PHONY: install install-demo install-test demo demo-pixels test lint bench tensorboard clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(CORE_STAMP): pyproject.toml | $(PY)
	$(PIP) -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(PY)
	$(PIP) -e '.[dev]'
	touch $@ $(CORE_STAMP)

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PIP) -e '.[$(TEST_EXTRAS)]'
	touch $@ $(DEV_STAMP) $(CORE_STAMP)

install-demo: $(CORE_STAMP)
install-test: $(TEST_STAMP)
install: install-test

# A real study on a pair the source policy does not solve zero-shot (~13 of 500 on length 1.0).
demo: $(CORE_STAMP)
	$(PY) -m rltransfer run CartPole-v1 CartPole-v1:length=1.0 \
	    --conditions scratch,finetune,reinit-head --seeds 5 --timesteps 30000 --eval-freq 1500

# Pixel transfer on CPU: PixelCatch with a red ball -> a blue ball (a visual change), in
# three studies that share their scratch runs (the scratch cache), then one table:
#  1. scratch and freeze-features; the source is PPO + NatureCNN trained on the red ball;
#  2. pretrained-encoder: that source's NatureCNN trunk (pretrained here, on PixelCatch-v0),
#     frozen, with fresh MLP and heads; its features computed once per observation;
#  3. scratch with DrQ's random shift: the strong baseline.
PIXEL_STUDY := rltransfer/PixelCatch-v0 rltransfer/PixelCatch-BlueBall-v0 --seeds 3 \
	--timesteps 10000 --eval-freq 1000 --resume
demo-pixels: $(CORE_STAMP)
	$(PY) -m rltransfer run $(PIXEL_STUDY) --conditions scratch,freeze-features --name demo-pixels
	$(PY) -m rltransfer run $(PIXEL_STUDY) --conditions scratch,pretrained-encoder \
	    --encoder nature-cnn --encoder-weights runs/demo-pixels/source/model.zip \
	    --name demo-pixels-encoder
	$(PY) -m rltransfer run $(PIXEL_STUDY) --conditions scratch --augment random-shift \
	    --name demo-pixels-drq
	$(PY) -m rltransfer compare runs/demo-pixels runs/demo-pixels-encoder runs/demo-pixels-drq \
	    --out runs

test: $(TEST_STAMP)
	$(PY) -m pytest

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .

bench: $(TEST_STAMP)
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/pixel_throughput.py
	$(PY) benchmarks/scaling.py
	$(PY) benchmarks/env_speed.py

# TensorBoard on 127.0.0.1 for a study (no activated venv needed): make tensorboard STUDY=runs/x
tensorboard: $(CORE_STAMP)
	@test -n "$(STUDY)" || { echo "no study in runs/: run one first (make demo)"; exit 2; }
	$(PY) -m rltransfer tensorboard $(STUDY)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
