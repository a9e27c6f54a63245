#!/usr/bin/env bash
# Container engine and base image for `make image` / `make test-containers` (issue 20), as root on
# a Debian bookworm machine with only the package registries reachable. Idempotent: every step is
# skipped when what it makes is already there, so CI runs it on every run (~30 s apt, ~2 min
# debootstrap the first time, ~1 s after).
#
# Engine: Debian's docker.io (dockerd started by hand, overlay2, BuildKit) + docker-compose 1.29.
# Chosen over podman because it works with no workaround here and compose 1.29 drives it fully
# (healthchecks, `service_healthy`, `--scale`); podman 4.3 needs runc, ulimit overrides, and under
# compose splits `["CMD", ...]` healthchecks and never runs them without systemd. podman is still
# installed, for one thing docker cannot do: `podman kube play` of the Deployment.
#
# Base image: `python:3.11-slim-bookworm` when it is present or can be pulled; otherwise a
# debootstrapped bookworm minbase with Python 3.11, the host's CA certificates (so pip inside
# builds reaches the index the host reaches) and no EXTERNALLY-MANAGED marker, imported as
# $LOCAL_BASE. The last line printed is the image to pass as the Dockerfile's PYTHON_IMAGE; it is
# also written to deploy/containers/.base-image for the make targets and tests.
#
#   sudo bash deploy/containers/setup-engine.sh          # engine + base image
#   SETUP_BASE=0 bash deploy/containers/setup-engine.sh  # engine only
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
UPSTREAM_BASE="${UPSTREAM_BASE:-python:3.11-slim-bookworm}"
LOCAL_BASE="${LOCAL_BASE:-nlp-python:3.11-bookworm-minbase}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
# Debian's client, matching its daemon (another `docker` earlier on PATH may want buildx).
DOCKER="${DOCKER:-/usr/bin/docker}"

log() { printf '[setup-engine] %s\n' "$*" >&2; }

install_packages() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    [ -x /usr/bin/docker-compose ] || missing+=(docker-compose)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v iptables >/dev/null || missing+=(iptables)
    # podman only for `podman kube play` of deploy/k8s/deployment.yaml (its settings:
    # deploy/containers/podman-containers.conf); catatonit makes its local pause image.
    command -v podman >/dev/null || missing+=(podman)
    command -v catatonit >/dev/null || [ -x /usr/libexec/podman/catatonit ] || missing+=(catatonit)
    if [ ${#missing[@]} -gt 0 ]; then
        log "apt-get install ${missing[*]}"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

start_dockerd() {
    if "$DOCKER" info >/dev/null 2>&1; then
        return
    fi
    log "starting dockerd (log: $DOCKERD_LOG)"
    # setsid: not a child of this shell's session, so it outlives CI steps that end their group.
    setsid nohup dockerd >"$DOCKERD_LOG" 2>&1 < /dev/null &
    for _ in $(seq 60); do
        "$DOCKER" info >/dev/null 2>&1 && return
        sleep 1
    done
    log "dockerd did not answer within 60 s; its log:"
    tail -n 30 "$DOCKERD_LOG" >&2
    exit 1
}

build_local_base() {
    local rootfs
    rootfs="$(mktemp -d /var/tmp/nlp-base-rootfs.XXXXXX)"
    log "debootstrap bookworm minbase into $rootfs (~2 min)"
    debootstrap --variant=minbase \
        --include=python3.11,python3.11-venv,python3-pip,python-is-python3,ca-certificates \
        bookworm "$rootfs" "$DEBIAN_MIRROR" >/dev/null
    # The host's extra CAs (a proxy's, a company's): pip and apt inside builds trust what the host
    # trusts. pip reads its bundle from /etc/pip.conf (the venv's pip vendors certifi otherwise),
    # uv (BentoML's installer in the Bento image) from SSL_CERT_FILE / UV_NATIVE_TLS below.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    fi
    chroot "$rootfs" update-ca-certificates >/dev/null
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$rootfs/etc/pip.conf"
    rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
    # Smaller image: no apt lists, docs or caches.
    chroot "$rootfs" apt-get clean
    # debootstrap leaves nothing mounted when it succeeds; make sure before tar and rm -rf.
    umount "$rootfs/proc" "$rootfs/sys" 2>/dev/null || true
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
        "$rootfs"/var/cache/debconf/*-old
    tar -C "$rootfs" --one-file-system -c . | "$DOCKER" import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV UV_NATIVE_TLS=true' \
        --change 'CMD ["python3"]' - "$LOCAL_BASE" >/dev/null
    rm -rf --one-file-system "$rootfs"
}

pick_base() {
    if "$DOCKER" image inspect "$UPSTREAM_BASE" >/dev/null 2>&1 \
        || timeout 60 "$DOCKER" pull -q "$UPSTREAM_BASE" >/dev/null 2>&1; then
        echo "$UPSTREAM_BASE"
        return
    fi
    if ! "$DOCKER" image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
        log "$UPSTREAM_BASE cannot be pulled: building $LOCAL_BASE"
        build_local_base
    fi
    echo "$LOCAL_BASE"
}

install_packages
start_dockerd
if [ "${SETUP_BASE:-1}" = 1 ]; then
    base="$(pick_base)"
    echo "$base" > "$HERE/.base-image"
    log "base image: $base"
    echo "$base"
fi
