"""Hypemeter's benchmark harness (see PERF.md); run with ``python -m bench``."""
