"""Distillation divergences (forward KL, reverse KL, generalised JS) over large vocabularies."""
