"""Sample-based divergence estimators."""

from jaxdiv.estimators._monte_carlo import kl_estimate_terms
