"""Settings and test runner wrapped around a third-party app's own test settings.

This directory is put on PYTHONPATH of the app's test run (and the routerkit
checkout's root is not, so the app's own `tests` package is the one imported).
"""
