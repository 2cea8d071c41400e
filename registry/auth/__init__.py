"""Authentication and authorization: who is asking (Principal), token verification, scoping."""
