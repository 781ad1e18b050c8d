"""Micro-benchmarks that drive real server processes with ``wrk`` on loopback."""
