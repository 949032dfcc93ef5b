"""Inference: model files and backends, the classifier, Grad-CAM, and the batch prediction job."""
