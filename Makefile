# The README's two commands (and `make smoke`, the synthetic plumbing check). Each installs the project-local .venv on first use
# (scripts/bootstrap.sh: torch/torchvision pair, learn2learn rebuilt with Cython 3, metarec).
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: quickstart smoke coldstart test venv bench-throughput

venv:
	@bash scripts/bootstrap.sh

quickstart: venv
	$(VENV)/bin/metarec bench benchmarks/suites/quickstart.yaml

smoke: venv
	$(VENV)/bin/metarec bench benchmarks/suites/smoke.yaml

coldstart: venv
	$(VENV)/bin/metarec bench benchmarks/suites/coldstart-ml100k.yaml

test: venv
	$(PY) -m pytest -q
