"""The events stream in both directions: decoding entries, publishing events, dead letters."""
