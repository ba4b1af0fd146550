"""Namespace shapes of operators' networks and the test matrix over them."""
