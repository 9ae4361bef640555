# Two commands do everything on a fresh machine:  `make run` (main job) and `make test` (test suite).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run test test-slow bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v ngspice >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ]; then apt-get update -qq && apt-get install -y -qq ngspice; \
	  else echo "ngspice missing: run 'sudo apt-get install -y ngspice'" >&2; fi; }
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(PY) scripts/train.py circuit=amp surrogate.fixed_params=true
	$(PY) scripts/optimize.py task=amp_gain task.target=3.5

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) scripts/bench_reference.py
	$(PY) scripts/bench_surrogate.py eval pretrained/*.pt
	$(PY) scripts/bench_design.py --tasks rc_delay amp_gain --k 5

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
