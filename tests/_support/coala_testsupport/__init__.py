"""Helpers shared by several test folders (on ``sys.path`` through pytest's ``pythonpath`` setting in
pyproject.toml): :mod:`coala_testsupport.prefect` (the session-wide Prefect test server fixture) and
:mod:`coala_testsupport.readme` (the README's bash blocks, run by tests exactly as written)."""
