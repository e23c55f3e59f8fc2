# Two commands from a clean clone: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-pythons lint typecheck bench soak clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,examples]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m examples.tickets

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: lint typecheck
	$(PY) -m pytest

# The suite on every supported CPython this machine has, each in its own .venv-3.X (README, "Supported
# Pythons"); one that is missing is skipped and said so. `EXCEPT="3.11"` skips versions already tested.
PYTHONS ?= 3.11 3.12 3.13
test-pythons:
	.ci/test-pythons $(PYTHONS)

bench: $(STAMP)
	$(PY) -m tools.bench

# Our local and cross-process rows, then the Python peers (pykka, Thespian in-process and multiprocess,
# xoscar, Ray) on the same scenarios, in one sitting. The peers get their own venv so nothing of theirs
# reaches ours; pinned to the versions measured (the install takes about 45 s, Ray and xoscar bring
# numpy, pandas and scipy). See tools/bench/peers.py and BENCHMARKS.md.
PEER_PINS := pykka==4.5.0 thespian==4.0.1 xoscar==0.12.2 ray==2.60.0
.PHONY: bench-peers
bench-peers: $(STAMP)
	test -x .venv-peers/bin/python || $(PYTHON) -m venv .venv-peers
	.venv-peers/bin/python -m pip install --quiet $(PEER_PINS)
	$(PY) -m tools.bench --only local_cast --only local_call --only spawn --only ring_local \
		--only cross_cast --only cross_call --only ring_2workers --json bench-results-peers-ours.json
	.venv-peers/bin/python tools/bench/peers.py --json bench-results-peers.json

soak: $(STAMP)
	SOAK=1 $(PY) -m pytest tests/reliability

clean:
	rm -rf $(VENV) .venv-3.* build *.egg-info .pytest_cache .mypy_cache .ruff_cache
