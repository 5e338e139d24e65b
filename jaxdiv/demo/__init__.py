"""Demonstrations of jaxdiv in real training code (Flax NNX on scikit-learn's digits)."""
