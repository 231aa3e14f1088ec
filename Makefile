# Two entry points for a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO   ?= demo-out
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: install demo test test-slow bench clean

install: $(STAMP)

# torch/torchvision pinned to CPU releases (a looser spec may pull a multi-GB CUDA build);
# sam2 builds without CUDA.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-build-isolation sam2==1.1.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO)
	$(VENV)/bin/trajdata synth $(DEMO)/corpus --videos 6 --images 4 --seed 0 --style photo
	$(VENV)/bin/trajdata annotate --source local --input $(DEMO)/corpus/media --output $(DEMO)/annotated --cpus 2
	$(VENV)/bin/trajdata filter $(DEMO)/annotated --output $(DEMO)/filtered
	$(VENV)/bin/trajdata validate $(DEMO)/annotated
	$(VENV)/bin/trajdata validate $(DEMO)/filtered
	@echo "demo output: $(DEMO)/annotated (all samples) and $(DEMO)/filtered (kept samples)"

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# Every benchmark in bench/, summarised as ratios in bench/REPORT.md (the longest target: minutes to run).
bench: $(STAMP)
	$(PY) bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(DEMO) .pytest_cache
