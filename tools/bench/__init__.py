"""Benchmark harness: every kernel figure is printed beside a raw floor measured in the same run.

The machine is noisy, so absolute numbers mean little; the ratio ours/floor is what the targets in
issue 8 are written against. Run it with ``python -m tools.bench`` (``make bench``).
"""
