"""Measurements, one module each: run from the repository root as ``uv run python -m benchmarks.NAME``."""
