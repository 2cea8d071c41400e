"""Queries: the typed query, the pure planner, the in-memory matcher and the executor."""
