"""Fault-injection suite: real processes, real redis-server instances, the reference fold as the oracle."""
