#!/usr/bin/env bash
# run-all.sh [--reuse-fixtures]
#
# The project's test command. Runs as root (the fixture build and the tests
# that loop-mount images need it):
#   1. builds the fixture images (tests/fixtures/build-images.sh), or with
#      --reuse-fixtures keeps a fixture folder that already has an OCI layout,
#      and downloads the kernel package (tests/fixtures/fetch-kernel.sh);
#   2. starts the loopback registry (tests/fixtures/registry.sh start);
#   3. runs cargo fmt --check, cargo clippy with -D warnings and cargo test
#      for the whole workspace;
#   4. stops the registry if this script started it, and exits with the
#      status of the first step that failed.
#
# Environment:
#   BANGER_FIXTURES            fixture folder (default /var/tmp/banger-fixtures)
#   BANGER_TEST_REGISTRY_PORT  registry port on 127.0.0.1 (default 5055)
#   BANGER_TEST_REGISTRY       registry address the tests use
#                              (default 127.0.0.1:$BANGER_TEST_REGISTRY_PORT)
#   BANGER_FIXTURE_CACHE       debootstrap cache (see build-images.sh)
set -euo pipefail

REUSE_FIXTURES=0
for arg in "$@"; do
  case $arg in
    --reuse-fixtures) REUSE_FIXTURES=1 ;;
    *) echo "run-all.sh: unknown argument '$arg'; the only option is --reuse-fixtures" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BANGER_FIXTURES=$(realpath -m "${BANGER_FIXTURES:-/var/tmp/banger-fixtures}")
BANGER_TEST_REGISTRY_PORT=${BANGER_TEST_REGISTRY_PORT:-5055}
BANGER_TEST_REGISTRY=${BANGER_TEST_REGISTRY:-127.0.0.1:$BANGER_TEST_REGISTRY_PORT}
export BANGER_FIXTURES BANGER_TEST_REGISTRY_PORT BANGER_TEST_REGISTRY

[ "$(id -u)" = 0 ] || { echo "run-all.sh: must run as root (sudo bash tests/run-all.sh)" >&2; exit 1; }

step() { printf '\n==> %s\n' "$*"; }

# A registry that registry.sh started earlier for this fixture folder is
# reused and left running; one that this script starts is stopped on exit.
PIDFILE=$BANGER_FIXTURES/registry/registry.pid
registry_running() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null \
    && grep -q docker-registry "/proc/$(cat "$PIDFILE")/cmdline" 2>/dev/null
}
STARTED_REGISTRY=0
cleanup() {
  local status=$?
  if [ "$STARTED_REGISTRY" = 1 ]; then
    bash tests/fixtures/registry.sh stop "$BANGER_FIXTURES" "$BANGER_TEST_REGISTRY_PORT" || true
  fi
  exit "$status"
}
trap cleanup EXIT

if [ "$REUSE_FIXTURES" = 1 ] && [ -f "$BANGER_FIXTURES/oci/index.json" ]; then
  step "reusing fixtures in $BANGER_FIXTURES"
else
  step "building fixtures in $BANGER_FIXTURES"
  bash tests/fixtures/build-images.sh "$BANGER_FIXTURES"
fi

step "fetching the Debian cloud kernel package"
bash tests/fixtures/fetch-kernel.sh >/dev/null

step "starting the registry on 127.0.0.1:$BANGER_TEST_REGISTRY_PORT"
registry_running || STARTED_REGISTRY=1
bash tests/fixtures/registry.sh start "$BANGER_FIXTURES" "$BANGER_TEST_REGISTRY_PORT"

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test (BANGER_FIXTURES=$BANGER_FIXTURES BANGER_TEST_REGISTRY=$BANGER_TEST_REGISTRY)"
cargo test --workspace

step "all tests passed"
