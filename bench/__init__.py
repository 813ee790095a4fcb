"""Benchmark scripts: speed and quality measurements whose numbers go into docs/benchmarks.md."""
