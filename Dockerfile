# The project image, for docker-compose.yml: the serving image (default target, no torch) and a
# `builder` image (target `builder`, torch + Optimum) that exports models into a shared model
# store volume. Kubernetes uses the Bento image instead (`bentoml containerize`, models inside).
#
#   docker build -t nlp-serving:latest .                                  # serving (final stage)
#   docker build --target builder -t nlp-serving-builder:latest .         # model builder
#   docker run --rm -v nlp-models:/home/bentoml/models -e PROFILE=tiny nlp-serving-builder:latest
#   docker run -d -p 3000:3000 -p 3001:3001 -v nlp-models:/home/bentoml/models nlp-serving:latest
#
# Same user (bentoml, uid/gid 1034) and BENTOML_HOME (/home/bentoml) as the Bento image, so the
# model store volume is interchangeable. tests/test_deploy.py checks USER, EXPOSE and HEALTHCHECK.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV LANG=C.UTF-8 \
    LC_ALL=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    BENTOML_HOME=/home/bentoml \
    BENTOML_DO_NOT_TRACK=True \
    TOKENIZERS_PARALLELISM=false \
    HF_HUB_OFFLINE=1
RUN groupadd --gid 1034 bentoml \
    && useradd --uid 1034 --gid 1034 --create-home --home-dir /home/bentoml --shell /bin/bash bentoml \
    && mkdir -p /home/bentoml/models \
    && chown -R bentoml:bentoml /home/bentoml \
    && python -m venv /opt/venv
WORKDIR /app
# The serving dependencies only (the serving lock: exact versions with hashes, no resolving; no
# torch, no transformers): wheels, no compiler needed.
COPY requirements/serving.txt requirements/serving.txt
RUN pip install --require-hashes --no-deps -r requirements/serving.txt

# --- builder: the export side (torch CPU wheel, transformers, Optimum) and the whole project,
# from the export lock. Runs `python -m models build --profile $PROFILE` into
# $BENTOML_HOME/models (a volume).
FROM base AS builder
# Where pip finds the CPU-only torch wheel the lock pins (PyPI's Linux torch pulls several GB of
# CUDA libraries): the PyTorch CPU index by default; a folder or an offline mirror's page works.
ARG TORCH_FIND_LINKS=https://download.pytorch.org/whl/cpu/torch/
COPY requirements/export.txt requirements/export.txt
RUN pip install --require-hashes --no-deps --find-links "${TORCH_FIND_LINKS}" \
        -r requirements/export.txt
COPY pyproject.toml README.md ./
COPY models ./models
COPY service ./service
RUN pip install --no-deps --no-build-isolation .
USER bentoml
ENV PROFILE=tiny
CMD ["sh", "-c", "exec python -m models build --profile \"${PROFILE}\""]

# --- serving (the default target): the service and the torch-free reading side of models/.
FROM base AS serving
COPY --chown=bentoml:bentoml service ./service
COPY --chown=bentoml:bentoml models/__init__.py models/store.py models/catalog.py \
     models/catalog.yaml models/hashing.py models/layout.py models/cpu.py ./models/
# BentoML creates these under BENTOML_HOME at start-up: made here, so that the server starts on a
# read-only root filesystem (`docker run --read-only --tmpfs /tmp`, tests/test_containers.py).
RUN mkdir -p /home/bentoml/bentos /home/bentoml/envs /home/bentoml/tmp/bentos \
    && chown -R bentoml:bentoml /home/bentoml/bentos /home/bentoml/envs /home/bentoml/tmp
# Listen on every interface in the container (service/config.yaml says 127.0.0.1).
ENV HOST=0.0.0.0 \
    PORT=3000 \
    GRPC_PORT=3001 \
    PROFILE=tiny
USER bentoml
# HTTP (task routes, OpenAI, KServe v2 REST, /metrics) and KServe v2 gRPC.
EXPOSE 3000 3001
# Healthy once every model is loaded and warmed (/readyz follows the service's __is_ready__).
# The image has Python but no curl or wget.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=6 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '3000'), timeout=4)"]
CMD ["bentoml", "serve", "service.service:NLPService"]
