"""The executor's steps, one module per strategy, each a set of functions over a QueryContext."""
