"""The live view: the change log, the per-process feed and one watcher's ordered stream."""
