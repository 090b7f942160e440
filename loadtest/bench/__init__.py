"""Benchmarks (`rtvol bench ...`) and the bare transport echoes they compare against."""
