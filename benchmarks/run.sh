#!/usr/bin/env bash
# Benchmark routerkit beside its peer packages in one run and write the table into README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

source .ci/venv.sh dev "django-multidb-router==0.11" "django-replicated==2.7"
# valgrind's callgrind counts instructions (routing.py, instructions.py); wrk drives HTTP.
for tool in valgrind wrk; do
    command -v "$tool" >/dev/null || apt-get install -y -q "$tool" >/dev/null
done
.venv/bin/python benchmarks/routing.py --write-readme "$@"
.venv/bin/python benchmarks/statements.py --write-readme
.venv/bin/python benchmarks/validate.py --write-readme
.venv/bin/python benchmarks/faults.py --write-readme
.venv/bin/python benchmarks/instructions.py --write-readme
.venv/bin/python benchmarks/archive.py --write-readme  # about 30 min: loaddata of a million rows
exec .venv/bin/python benchmarks/offload.py --write-readme
