"""Experiment harness: runs, measurements, fault injection and benchmarks."""
