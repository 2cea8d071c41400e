"""Storage and the write path: what each index holds and the projection that applies events."""
