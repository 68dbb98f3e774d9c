"""Benchmark suites: expansion into cells, a resumable run store, reports."""
