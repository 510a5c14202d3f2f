"""Peer implementations of the same provisioning flow on other engines, for the benchmark only."""
