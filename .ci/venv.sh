# Sourced by the run scripts: make .venv/ (once) and install routerkit with the extras in $1.
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$1]" "${@:2}"
