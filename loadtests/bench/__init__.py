"""Benchmarks: measured ratios, ours against baselines, in one run."""
