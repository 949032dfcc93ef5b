"""Inference: load a trained model and predict images."""
