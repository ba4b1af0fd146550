"""Namespace labs: topologies, backend servers and traffic for tests, demo and benchmarks."""
