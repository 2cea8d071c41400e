"""Benchmarks (not part of the default test run): data generator, PostgreSQL baseline, shapes."""
