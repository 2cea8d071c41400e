"""Operations: the jobreg CLI, the embedded store, demo traffic, `top`, pipeline health and metrics."""
