#!/usr/bin/env bash
# Run routerkit's whole test suite on a fresh machine: a virtual environment with the
# test dependencies, PostgreSQL from apt when it is missing, lint, types, then pytest
# against a real primary with two streaming replicas started on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

source .ci/venv.sh dev

if [ -z "${ROUTERKIT_PG_BINDIR:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "tests/run.sh: installing PostgreSQL from apt" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    apt_updated=1
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi

# promtool and a Prometheus server, for the metrics tests.
if ! command -v promtool >/dev/null 2>&1; then
    echo "tests/run.sh: installing Prometheus from apt" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    [ -n "${apt_updated:-}" ] || $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq prometheus >/dev/null
fi

.venv/bin/ruff check routerkit tests example_project benchmarks
.venv/bin/ruff format --check routerkit tests example_project benchmarks
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
