# Container targets (issue 20), included by the Makefile. Root on a Debian bookworm machine:
#   make container-engine   docker.io + docker-compose + debootstrap, dockerd, the base image
#   make image              serving, builder and Bento images (deploy/containers/build-images.sh)
#   make test-containers    build and run them: tests/test_containers.py, test_compose.py
# The base image is python:3.11-slim-bookworm where a registry answers, else a debootstrapped
# bookworm (deploy/containers/setup-engine.sh); PYTHON_IMAGE=... picks another.
CONTAINERS := deploy/containers
PYTHON_IMAGE ?=
CONTAINER_TESTS ?= tests/test_containers.py tests/test_compose.py

.PHONY: container-engine image test-containers

container-engine:
	bash $(CONTAINERS)/setup-engine.sh

image: install container-engine
	PY=$(PY) $(if $(PYTHON_IMAGE),PYTHON_IMAGE=$(PYTHON_IMAGE)) bash $(CONTAINERS)/build-images.sh

# NLP_REQUIRE_CONTAINERS=1: no engine is a failure here, never a skip.
test-containers: install container-engine
	NLP_REQUIRE_CONTAINERS=1 HF_HUB_OFFLINE=1 $(if $(PYTHON_IMAGE),PYTHON_IMAGE=$(PYTHON_IMAGE)) \
		$(PY) -m pytest -v -p no:cacheprovider $(CONTAINER_TESTS)
