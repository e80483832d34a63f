"""Benchmarks: the platform measured against the compute floor of the same work.

Run ``make bench`` (or ``python -m benchmarks``); results go to ``benchmarks/results/``.
Benchmarks produce numbers, never pass/fail verdicts.
"""
