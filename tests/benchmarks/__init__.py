"""Benchmarks: ``python -m tests.benchmarks [--quick] [suite ...]`` (``make bench`` / ``make bench-quick``).

Each suite is a module ``tests/benchmarks/bench_<name>.py`` defining ``run(quick: bool) -> list[Figure]``.
Every figure is printed next to the ceiling measured in the same run, as a ratio.
"""
