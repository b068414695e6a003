"""The gradient-step benchmark: python -m benchmarks.bench (see bench.py)."""
