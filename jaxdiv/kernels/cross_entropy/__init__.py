"""Softmax cross-entropy with integer labels over large vocabularies."""
