"""Benchmark lookups (NAS-Bench-201 table)."""
from .nb201 import BenchmarkError, BenchmarkTable

__all__ = ["BenchmarkError", "BenchmarkTable"]
