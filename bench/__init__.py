"""Benchmarks: `python -m bench.relay` compares the relay daemon with Postfix."""
