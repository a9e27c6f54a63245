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

.PHONY: install lock lock-peers serve models test test-serving test-slow lint clean loadtest bench bench-quick

# Installs the lock (requirements/dev.txt: exact versions, sha256 hashes, no resolving) and the
# project itself, editable, with the lock's setuptools. `make lock` regenerates the lock.
# TORCH_FIND_LINKS: where pip finds the CPU torch wheel when PIP_FIND_LINKS does not say
# (e.g. https://download.pytorch.org/whl/cpu/torch/).
TORCH_FIND_LINKS ?=
PIP_LOCKED = --require-hashes --no-deps $(if $(TORCH_FIND_LINKS),--find-links $(TORCH_FIND_LINKS))

$(VENV)/.installed: requirements/dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(PIP_LOCKED) -r requirements/dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

# Regenerates the locks from pyproject.toml and requirements/*.in (README "Updating the lock"):
# the dev/test lock for Python 3.11 on Linux x86-64 first, then, constrained by it so they agree
# by construction, the export lock (the builder image), the serving lock (what the images and the
# Bento install; every Python the serving side supports) and the serving tests' lock.
# Existing pins are kept unless UPGRADE=1 (or UPGRADE_PACKAGE=name).
UPGRADE ?=
UPGRADE_PACKAGE ?=
UV_COMPILE = UV_CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/uv pip compile -q --generate-hashes \
  $(if $(UPGRADE),--upgrade) $(if $(UPGRADE_PACKAGE),--upgrade-package $(UPGRADE_PACKAGE))
lock: install
	$(UV_COMPILE) pyproject.toml requirements/dev.in --extra export --extra dev --extra local \
	  --override requirements/overrides.txt --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 \
	  --find-links $(or $(TORCH_FIND_LINKS),$(PIP_FIND_LINKS),https://download.pytorch.org/whl/cpu/torch/) \
	  -o requirements/dev.txt
	$(UV_COMPILE) pyproject.toml requirements/export.in --extra export --extra local \
	  --override requirements/overrides.txt --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 \
	  --find-links $(or $(TORCH_FIND_LINKS),$(PIP_FIND_LINKS),https://download.pytorch.org/whl/cpu/torch/) \
	  -c requirements/dev.txt -o requirements/export.txt
	$(UV_COMPILE) pyproject.toml --universal --python-version 3.11 -c requirements/dev.txt \
	  -o requirements/serving.txt
	$(UV_COMPILE) pyproject.toml requirements/build.in --extra dev --universal --python-version 3.11 \
	  -c requirements/dev.txt -o requirements/serving-tests.txt
	$(MAKE) --no-print-directory lock-peers

# The bench's peers (loadtests/bench/peer_servers.py): one lock each, for the Python 3.11 venv
# the suite makes under .cache/bench/peers/<peer>; onnxruntime and tokenizers as the serving
# lock has them. PyTriton is not constrained by it (it caps numpy below 2; manylinux_2_35 wheel).
PEERS_SERVING_CONSTRAINED := fastapi-ort bentoml-batchable litserve ray-serve
lock-peers: install
	for peer in $(PEERS_SERVING_CONSTRAINED); do \
	  $(UV_COMPILE) requirements/peers/$$peer.in -c requirements/serving.txt --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 -o requirements/peers/$$peer.txt || exit 1; \
	done
	$(UV_COMPILE) requirements/peers/pytriton.in --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_35 -o requirements/peers/pytriton.txt

models: install
	$(PY) -m models build --profile $(PROFILE)

serve: models
	$(VENV)/bin/bentoml serve service.service:NLPService --host $(HOST) --port $(PORT)

test: install
	$(PY) -m pytest -q -m "not slow"

# The serving side on another Python (3.11, 3.12, 3.13): a venv of its own from the serving
# lock (requirements/serving-tests.txt: the serving packages and the test clients, no torch),
# the tiny models built once by the main venv, then every test that needs no export side
# (tests/conftest.py `--serving-only` deselects the rest and the summary counts them).
# E.g. `make test-serving SERVING_PY=3.13`.
SERVING_PY ?= 3.13
SERVING_VENV ?= .venv-serving-$(SERVING_PY)
SERVING_PYTHON ?= $(shell v=$$(pyenv versions --bare 2>/dev/null | grep -E '^$(SERVING_PY)(\.[0-9]+)?$$' | tail -1); \
  if [ -n "$$v" ]; then echo "$$(pyenv root)/versions/$$v/bin/python$(SERVING_PY)"; else echo python$(SERVING_PY); fi)
TEST_STORE ?= $(CURDIR)/.cache/test-store-tiny

$(SERVING_VENV)/.installed: requirements/serving-tests.txt pyproject.toml
	test -x $(SERVING_VENV)/bin/python || $(SERVING_PYTHON) -m venv $(SERVING_VENV)
	$(SERVING_VENV)/bin/python -m pip install -q --require-hashes --no-deps -r requirements/serving-tests.txt
	$(SERVING_VENV)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

test-serving: install $(SERVING_VENV)/.installed
	BENTOML_HOME=$(TEST_STORE) $(PY) -m models build --profile tiny
	NLP_TEST_STORE=$(TEST_STORE) $(SERVING_VENV)/bin/python -m pytest -q -m "not slow and not containers" \
	  --serving-only

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
# over HTTP and gRPC against in-process ONNX Runtime, a FastAPI + PyTorch server and the peers
# (loadtests/bench/peer_servers.py: BentoML batchable, PyTriton, Ray Serve, LitServe, FastAPI +
# ORT; classification fp32, HTTP c=1/c=16, each in a venv of its own made from
# requirements/peers/*.txt under .cache/bench/peers: + ~2 min the first time), CTranslate2
# for generation and translation, the encoder task lines; ≈ 28-31 min, also on a fresh clone
# (its accuracy section needs the sentiment classifier `make models` trains once, else skipped).
# Each run's goals are also filed under its CPU class (docs/bench/by-cpu-class/).
# bench-quick: MiniLM embeddings plus one line per encoder task (fill-mask, rerank, zero-shot,
# similarity, NER where served; HTTP c=16 vs in process), ≈ 95 s (first run 145 s: five exports
# and the tiny store, side by side), report in reports/bench-quick (also run by `make test`).
BENCH_ARGS ?=
bench: install
	$(PY) -m loadtests.bench.suite $(BENCH_ARGS)

bench-quick: install
	$(PY) -m loadtests.bench.suite --quick $(BENCH_ARGS)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .bentoml .pytest_cache .ruff_cache

# Container images and their tests under a real engine (deploy/containers/, README "Deploy").
include deploy/containers.mk
