#!/usr/bin/env bash
# Benchmark routerkit beside its peer packages in one run and write the table into README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]" \
    "django-multidb-router==0.11" "django-replicated==2.7"
exec .venv/bin/python benchmarks/routing.py --write-readme "$@"
