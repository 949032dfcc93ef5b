"""Evaluation: metrics (scikit-learn) and report files."""
