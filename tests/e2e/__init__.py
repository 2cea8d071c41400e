"""End-to-end tests: real processes talking over HTTP."""
