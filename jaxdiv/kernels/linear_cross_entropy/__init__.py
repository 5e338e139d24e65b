"""Cross-entropy of `hidden @ weight` without the [tokens, vocab] logits."""
