"""jaxdiv: entropies and divergences between probability distributions, as pure JAX functions.

The whole public API, one name a line.
"""

from jaxdiv import checks
from jaxdiv import estimators
from jaxdiv import kernels
from jaxdiv import losses
from jaxdiv import parametric
from jaxdiv.discrete import alpha_divergence
from jaxdiv.discrete import bhattacharyya_distance
from jaxdiv.discrete import binary_cross_entropy
from jaxdiv.discrete import binary_entropy
from jaxdiv.discrete import binary_kl_divergence
from jaxdiv.discrete import chi_squared_divergence
from jaxdiv.discrete import cross_entropy
from jaxdiv.discrete import entropy
from jaxdiv.discrete import f_divergence
from jaxdiv.discrete import hellinger_distance
from jaxdiv.discrete import jeffreys_divergence
from jaxdiv.discrete import js_distance
from jaxdiv.discrete import js_divergence
from jaxdiv.discrete import kl_divergence
from jaxdiv.discrete import renyi_divergence
from jaxdiv.discrete import renyi_entropy
from jaxdiv.discrete import total_variation_distance
from jaxdiv.discrete import tsallis_divergence
from jaxdiv.discrete import tsallis_entropy
from jaxdiv.evaluation import EvalResult
from jaxdiv.evaluation import evaluate

__version__ = "0.1.0"

__all__ = [
    "EvalResult",
    "alpha_divergence",
    "bhattacharyya_distance",
    "binary_cross_entropy",
    "binary_entropy",
    "binary_kl_divergence",
    "checks",
    "chi_squared_divergence",
    "cross_entropy",
    "entropy",
    "estimators",
    "evaluate",
    "f_divergence",
    "hellinger_distance",
    "jeffreys_divergence",
    "js_distance",
    "js_divergence",
    "kernels",
    "kl_divergence",
    "losses",
    "parametric",
    "renyi_divergence",
    "renyi_entropy",
    "total_variation_distance",
    "tsallis_divergence",
    "tsallis_entropy",
]
