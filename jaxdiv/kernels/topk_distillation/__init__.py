"""Distillation against a teacher's stored top-k log-probabilities (`api.py`)."""
