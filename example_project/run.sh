#!/usr/bin/env bash
# Run the example project on its embedded SQLite default: nothing to install but Python.
# Set DATABASE_URL / DATABASE_REPLICA_URLS to run it on real databases instead.
set -euo pipefail
cd "$(dirname "$0")/.."

source .ci/venv.sh postgres
.venv/bin/python example_project/manage.py migrate --noinput
echo "routerkit example: http://127.0.0.1:${PORT:-8000}/  (POST /notes/ text=..., GET /notes/<id>/)"
exec .venv/bin/python example_project/manage.py runserver "127.0.0.1:${PORT:-8000}"
