"""jobreg HTTP API: the Litestar app factory, controllers, parameter parsing and error mapping."""
