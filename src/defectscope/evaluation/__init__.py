"""Evaluation: metrics (scikit-learn), corruptions, the pointing game and report files."""
