"""Training: configuration, run folders, cached features, both phases and tf.distribute."""
