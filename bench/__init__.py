"""Benchmarks of the orchestrator on the local stack (issue #7): `python -m bench`.

Not part of the product package nor of the default test suite; see docs/benchmarks.md.
"""
