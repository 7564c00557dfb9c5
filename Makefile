# The quick start: `make demo` runs the whole pipeline, `make test` runs lint and the test suite,
# `make gpu-check` runs the workflow on a CUDA GPU and prints its speed.
# All three create the virtual environment on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint format demo install clean gpu-check web-runtime

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: these versions install from local files on our machines.
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev,metrics,onnx,video]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

# onnxruntime-web's real files for the browser tests: `npm pack`, once per machine, into .cache/ (tests/webparts.py).
# Without npm, Chromium or chromedriver the browser tests skip and say why (CI installs them: .ci/run).
web-runtime: $(STAMP)
	@if command -v npm >/dev/null 2>&1; then \
		$(BIN)/python tests/webparts.py || echo "Could not fetch onnxruntime-web; the browser tests will say why they skip."; \
	else echo "npm is not installed: the browser tests will skip."; fi

test: lint web-runtime
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/cgdistill demo

# The whole workflow on a CUDA GPU with its speed (benchmarks/gpu_check.py); DATA=folder for real images.
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py $(DATA)

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache .ruff_cache
