"""Benchmarks (run as modules, e.g. ``python -m bench.paillier_micro``)."""
