"""Repository tooling for the README's Quickstart (`python3 -m batchmove.dev sample|test`).

Resolves paths relative to a checkout, so it is left out of the wheel (pyproject.toml).
"""
