"""Per-token log-probabilities and entropy of a fused linear head (`api.py`)."""
