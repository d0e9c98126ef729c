# Each target creates .venv and installs what it needs, so each works alone on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo demo-pixels test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,box2d,atari,minigrid,ray]'
	touch $(STAMP)

install: $(STAMP)

# A real study on a pair the source policy does not solve zero-shot (~13 of 500 on length 1.0).
demo: $(STAMP)
	$(PY) -m rltransfer run CartPole-v1 CartPole-v1:length=1.0 \
	    --conditions scratch,finetune,reinit-head --seeds 5 --timesteps 30000 --eval-freq 1500

# Pixel transfer on CPU: PixelCatch with a red ball -> a blue ball (a visual change).
demo-pixels: $(STAMP)
	$(PY) -m rltransfer run rltransfer/PixelCatch-v0 rltransfer/PixelCatch-BlueBall-v0 \
	    --conditions scratch,finetune,freeze-features --seeds 3 --timesteps 10000 --eval-freq 1000

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/pixel_throughput.py
	$(PY) benchmarks/scaling.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
