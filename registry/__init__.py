"""jobreg core: events, the fold, the Redis projection and the query engine (no web or queue framework)."""
