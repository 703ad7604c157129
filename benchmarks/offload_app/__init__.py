"""The small Django site benchmarks/offload.py serves under gunicorn, once per router."""
