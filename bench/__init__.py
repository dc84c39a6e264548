"""Benchmarks; run with `make bench` (each one bounded to a few minutes)."""
