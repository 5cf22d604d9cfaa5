"""Throughput, latency and memory harness for Festora Vision (`python benchmarks/run.py`)."""
