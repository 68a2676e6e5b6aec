# freeze-omni: `make setup` builds .venv/ (system packages through apt, torch pinned first),
# `make test` runs the test suite (setting up first when needed),
# `make demo` answers a bundled spoken question with models/tiny-en (scripts/demo.sh),
# `make gpu-bench` runs the GPU latency/capacity benchmark (one CUDA GPU; needs only PyTorch, no network, no venv).
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip -q --disable-pip-version-check
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=
GPU_PYTHON ?= python3
GPU_BENCH_ARGS ?=

.PHONY: setup test demo clean-venv gpu-bench

setup: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml scripts/setup-system.sh
	./scripts/setup-system.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -r requirements-nodeps.txt
	$(PIP) install --no-deps -e .
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

demo: setup
	./scripts/demo.sh

clean-venv:
	rm -rf $(VENV)

# Upstream-shaped models with random weights (Qwen2-7B-shaped LLM in plain torch), CUDA graphs, one JSON line;
# about 1-7 minutes on one H200 (the user search stops at --time-limit 420 s). Without CUDA it prints a
# "skipped" line and exits 0. Check the script on a CPU with GPU_BENCH_ARGS=--dry-run.
gpu-bench:
	$(GPU_PYTHON) benchmarks/gpu_latency.py $(GPU_BENCH_ARGS)
