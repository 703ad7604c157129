#!/usr/bin/env bash
# Run routerkit's whole test suite on a fresh machine: a virtual environment with the
# test dependencies, PostgreSQL from apt when it is missing, lint, types, then pytest
# against a real primary with two streaming replicas started on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

source .ci/venv.sh dev

apt_install() {  # install a Debian package (as root, or through sudo)
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "tests/run.sh: installing $1 from apt" >&2
    if [ -z "${apt_updated:-}" ]; then
        $sudo apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$1" >/dev/null
}

# A real PostgreSQL for the replication tests; promtool and a Prometheus server
# for the metrics tests; wrk for the benchmarks' smoke tests.
if [ -z "${ROUTERKIT_PG_BINDIR:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install postgresql
fi
command -v promtool >/dev/null 2>&1 || apt_install prometheus
# wrk for the smoke test of benchmarks/offload.py's HTTP benchmark.
command -v wrk >/dev/null 2>&1 || apt_install wrk

.venv/bin/ruff check routerkit tests example_project benchmarks
.venv/bin/ruff format --check routerkit tests example_project benchmarks
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
exec .venv/bin/python -m pytest "$@"
