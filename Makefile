# Each target creates .venv and installs what it needs, so each works alone on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo demo-pixels test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,box2d,mujoco,atari,minigrid,ray,minari,hub,contrib,notebook]'
	touch $(STAMP)

install: $(STAMP)

# A real study on a pair the source policy does not solve zero-shot (~13 of 500 on length 1.0).
demo: $(STAMP)
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
demo-pixels: $(STAMP)
	$(PY) -m rltransfer run $(PIXEL_STUDY) --conditions scratch,freeze-features --name demo-pixels
	$(PY) -m rltransfer run $(PIXEL_STUDY) --conditions scratch,pretrained-encoder \
	    --encoder nature-cnn --encoder-weights runs/demo-pixels/source/model.zip \
	    --name demo-pixels-encoder
	$(PY) -m rltransfer run $(PIXEL_STUDY) --conditions scratch --augment random-shift \
	    --name demo-pixels-drq
	$(PY) -m rltransfer compare runs/demo-pixels runs/demo-pixels-encoder runs/demo-pixels-drq \
	    --out runs

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/pixel_throughput.py
	$(PY) benchmarks/scaling.py
	$(PY) benchmarks/env_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
