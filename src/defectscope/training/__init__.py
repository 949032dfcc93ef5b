"""Training: configuration, cached features, callbacks and the two-phase trainer."""
