"""The bottom layer: errors, atomic writes, the version. No TensorFlow, no other layer."""
