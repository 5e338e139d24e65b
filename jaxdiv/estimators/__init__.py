"""Sample-based divergence estimators: for when only samples or log-densities are known."""

from jaxdiv.estimators._knn import knn_entropy
from jaxdiv.estimators._knn import knn_kl_divergence
from jaxdiv.estimators._mmd import energy_distance
from jaxdiv.estimators._mmd import median_bandwidth
from jaxdiv.estimators._mmd import mmd2
from jaxdiv.estimators._monte_carlo import kl_estimate
from jaxdiv.estimators._monte_carlo import kl_estimate_terms
from jaxdiv.estimators._sinkhorn import sinkhorn_divergence
from jaxdiv.estimators._wasserstein import sliced_wasserstein_distance
