#!/usr/bin/env bash
# Builds every image the podman end-to-end test runs, with no container registry:
#   localhost/rtvol-base:bookworm   debootstrap'd Debian (python3, venv, CA certificates)
#   localhost/rtvol-redis:bookworm  the base + Debian's redis-server
#   localhost/rtvol-{feature,gateway}:0.1.0, localhost/rtvol-model:0.1.0-cpu
# The service images come from the unchanged Dockerfiles; only build args differ: the base
# above instead of python:slim, and pip installs from a wheelhouse built here on the host
# (pip inside a build cannot verify certificates on this network) mounted at /wheelhouse.
# Each step is skipped when its result exists; podman's layer cache covers the rest.
# Usage: tests/e2e/podman/build.sh   (root; podman, runc, debootstrap installed)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
WORK=${RTVOL_PODMAN_WORK:-$ROOT/build/podman}
PY=${PY:-$ROOT/.venv/bin/python}
# Debian stable takes point releases only; for a byte-for-byte rebuild point DEBIAN_MIRROR at a
# snapshot, e.g. http://snapshot.debian.org/archive/debian/20250520T000000Z (not reachable here).
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=localhost/rtvol-base:bookworm
REDIS=localhost/rtvol-redis:bookworm
TAG=0.1.0
# Wheels the host's resolve leaves out, pinned: the build tools of the Dockerfile's `pip wheel .`
# (pyproject's build-system), and async-timeout, which redis needs on Python < 3.11.3 only
# (bookworm's python3 is 3.11.2; the host's venv is newer, and pip evaluates markers for it).
EXTRA_WHEELS=(setuptools==84.2.1 wheel==0.48.0 async-timeout==5.0.1)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/containers.conf}
NICE=(nice -n 19)  # 2 shared cores: stay out of other people's benchmarks
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
mkdir -p "$WORK"

log() { printf '[build %s] %s\n' "$(date +%T)" "$*"; }

base_image() {
  if podman image exists "$BASE"; then log "$BASE exists"; return; fi
  local rootfs="$WORK/rootfs"
  rm -rf "$rootfs"
  log "debootstrap bookworm -> $rootfs"
  # libgomp1: OpenMP runtime of lightgbm/onnxruntime wheels (python:slim lacks it too).
  "${NICE[@]}" debootstrap --variant=minbase \
    --include=python3,python3-venv,ca-certificates,libgomp1 bookworm "$rootfs" "$MIRROR"
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  log "podman import -> $BASE"
  tar -C "$rootfs" -c . | "${NICE[@]}" podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$BASE"
  rm -rf "$rootfs"
}

redis_image() {
  if podman image exists "$REDIS"; then log "$REDIS exists"; return; fi
  log "podman build $REDIS"
  "${NICE[@]}" podman build -f "$HERE/redis.Containerfile" --build-arg BASE="$BASE" -t "$REDIS" "$HERE"
}

# The rtvol distribution's dependencies as wheels (torch is the CPU build constraints.txt pins),
# rebuilt only when the lock, pyproject.toml or EXTRA_WHEELS change.
wheelhouse() {
  local key stamp
  key=$({ cat "$ROOT/constraints.txt" "$ROOT/pyproject.toml"; echo "${EXTRA_WHEELS[*]}"; } | sha256sum | cut -c1-16)
  stamp="$WORK/wheels/.stamp-$key"
  if [ -f "$stamp" ]; then log "wheelhouse up to date ($key)"; return; fi
  rm -rf "$WORK/wheels"
  log "pip wheel -> $WORK/wheels"
  "${NICE[@]}" "$PY" -m pip wheel -q -c "$ROOT/constraints.txt" -w "$WORK/wheels" "$ROOT" "${EXTRA_WHEELS[@]}"
  rm -f "$WORK"/wheels/rtvol-*.whl  # the image builds its own from the sources it copies
  touch "$stamp"
}

service_image() {  # service_image SERVICE TAG [extra podman build args...]
  local svc=$1 tag=$2
  shift 2
  wheelhouse  # again: the lock may have changed while the previous image was building
  log "podman build localhost/rtvol-$svc:$tag"
  "${NICE[@]}" podman build -f "$ROOT/services/$svc/Dockerfile" \
    --build-arg PYTHON_IMAGE="$BASE" \
    --build-arg PIP_SOURCES="--no-index --find-links /wheelhouse" \
    --volume "$WORK/wheels:/wheelhouse:ro" \
    -t "localhost/rtvol-$svc:$tag" "$@" "$ROOT"
}

base_image
redis_image
service_image feature "$TAG"
service_image gateway "$TAG"
service_image model "$TAG-cpu" --build-arg VARIANT=cpu
# Untagged images from earlier runs (replaced images, stale build stages) go; this run's stay:
# they are the next run's layer cache. Bounds the store to about one run's worth (~10 GB).
podman image prune --force --filter "until=$STARTED" >/dev/null
podman images --filter reference='localhost/rtvol-*' --format '{{.Repository}}:{{.Tag}} {{.Size}}'
