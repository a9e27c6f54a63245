#!/usr/bin/env bash
# Build the project's images with Debian's dockerd (deploy/containers/setup-engine.sh first):
#   nlp-serving:latest          the Dockerfile's serving target (no torch)
#   nlp-serving-builder:latest  the builder target (torch CPU + Optimum), fills a model store
#   nlp-serving-bento:latest    `bentoml build` + `bentoml containerize --backend docker` of the
#                               tiny profile, from models the builder image exported
#   nlp-prometheus:latest, nlp-nginx:latest   Debian's prometheus / nginx-light on the same base,
#                               for docker-compose.yml where the upstream images cannot be pulled
# Prints one `name seconds` line per image built to $BUILD_TIMES (default
# .cache/containers/build-times.txt) for the results file.
#
#   PYTHON_IMAGE   base image (default: what setup-engine.sh chose, deploy/containers/.base-image)
#   TORCH_WHEELS   a local folder holding the torch CPU wheel: served on a loopback port during
#                  the builder build as its TORCH_FIND_LINKS (default: $PIP_FIND_LINKS or
#                  /opt/wheels); TORCH_FIND_LINKS set instead is passed through as is.
#   IMAGES         which to build, default "serving builder bento"; also "store" (export the tiny
#                  profile with the builder image into $STORE/models), "prometheus", "nginx"
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
DOCKER="${DOCKER:-/usr/bin/docker}"
PY="${PY:-$ROOT/.venv/bin/python}"
PYTHON_IMAGE="${PYTHON_IMAGE:-$(cat deploy/containers/.base-image 2>/dev/null || echo python:3.11-slim-bookworm)}"
IMAGES="${IMAGES:-serving builder bento}"
WORK="$ROOT/.cache/containers"
BUILD_TIMES="${BUILD_TIMES:-$WORK/build-times.txt}"
# The model store the builder image fills (bind-mounted; the Bento packs it); STORE overrides.
STORE="${STORE:-$WORK/home}"
mkdir -p "$WORK"
export DOCKER_BUILDKIT=1 BENTOML_DO_NOT_TRACK=True HF_HUB_OFFLINE=1
# Debian's docker client first on PATH, for `bentoml containerize` too.
export PATH="$(dirname "$DOCKER"):$PATH"

log() { printf '[build-images] %s\n' "$*" >&2; }
timed() {  # timed NAME CMD...: run, append "NAME SECONDS" to $BUILD_TIMES
    local name="$1" start end
    shift
    start=$(date +%s.%N)
    "$@"
    end=$(date +%s.%N)
    awk -v n="$name" -v s="$start" -v e="$end" 'BEGIN { printf "%s %.1f\n", n, e - s }' >> "$BUILD_TIMES"
}

build_serving() {
    log "serving image from $PYTHON_IMAGE"
    timed serving "$DOCKER" build --network host --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" \
        --target serving -t nlp-serving:latest .
}

build_builder() {
    local links="${TORCH_FIND_LINKS:-}" server=""
    if [ -z "$links" ]; then
        local wheels="${TORCH_WHEELS:-${PIP_FIND_LINKS:-/opt/wheels}}" port
        port="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
        "$PY" -m http.server --bind 127.0.0.1 --directory "$wheels" "$port" >/dev/null 2>&1 &
        server=$!
        trap '[ -n "$server" ] && kill "$server" 2>/dev/null || true' RETURN
        links="http://127.0.0.1:$port/"
        log "serving $wheels at $links for the builder's torch"
    fi
    log "builder image from $PYTHON_IMAGE"
    timed builder "$DOCKER" build --network host --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" \
        --build-arg "TORCH_FIND_LINKS=$links" --target builder -t nlp-serving-builder:latest .
}

fill_store() {
    # The builder image exports the tiny profile into the store as uid 1034 (the images' user).
    mkdir -p "$STORE/models"
    chown -R 1034:1034 "$STORE"
    log "exporting the tiny profile with the builder image into $STORE/models"
    timed model-build "$DOCKER" run --rm --network none -e PROFILE=tiny \
        -v "$STORE/models:/home/bentoml/models" nlp-serving-builder:latest
}

build_bento() {
    [ -d "$STORE/models" ] && [ -n "$(ls -A "$STORE/models")" ] || fill_store
    local bentofile="$WORK/bentofile.yaml"
    "$PY" deploy/bento/bentofile_for.py --profile tiny --base-image "$PYTHON_IMAGE" > "$bentofile"
    log "bentoml build + containerize from $PYTHON_IMAGE"
    BENTOML_HOME="$STORE" timed bento-build "$PY" -m bentoml build -f "$bentofile" . >/dev/null
    # From the temporary directory: BentoML 1.4.36+ refuses its own rendered Dockerfile template
    # outside the working directory (README "Deploy").
    (cd "${TMPDIR:-/tmp}" && BENTOML_HOME="$STORE" timed bento-containerize "$PY" -m bentoml \
        containerize nlp-serving:latest --backend docker --opt network=host \
        -t nlp-serving-bento:latest)
}

build_debian_package_image() {  # NAME: deploy/containers/images/NAME.Dockerfile -> nlp-NAME
    log "$1 image from $PYTHON_IMAGE (Debian package)"
    timed "$1" "$DOCKER" build --network host --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" \
        -f "deploy/containers/images/$1.Dockerfile" -t "nlp-$1:latest" deploy/containers/images
}

for image in $IMAGES; do
    case "$image" in
        serving) build_serving ;;
        builder) build_builder ;;
        store) fill_store ;;
        bento) build_bento ;;
        prometheus|nginx) build_debian_package_image "$image" ;;
        *) log "unknown image $image"; exit 2 ;;
    esac
done
