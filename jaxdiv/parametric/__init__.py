"""Closed-form entropies and divergences between parametric distributions.

Pure functions of parameter arrays (batch dimensions broadcast; ``vmap``/``jit``/``grad`` work),
in nats unless ``base`` is given. Parameter names follow scipy/distrax; each docstring says
which parameterisation (rate vs scale, standard deviation vs variance).
"""

from jaxdiv import checks as _checks
from jaxdiv.checks import check_positive  # the same objects as in jaxdiv.checks
from jaxdiv.checks import check_positive_definite
from jaxdiv.checks import checked
from jaxdiv.parametric import _checkify
from jaxdiv.parametric._exponential_family import bernoulli_entropy
from jaxdiv.parametric._exponential_family import bernoulli_kl_divergence
from jaxdiv.parametric._exponential_family import bernoulli_renyi_divergence
from jaxdiv.parametric._exponential_family import beta_entropy
from jaxdiv.parametric._exponential_family import beta_kl_divergence
from jaxdiv.parametric._exponential_family import beta_renyi_divergence
from jaxdiv.parametric._exponential_family import categorical_entropy
from jaxdiv.parametric._exponential_family import categorical_kl_divergence
from jaxdiv.parametric._exponential_family import categorical_renyi_divergence
from jaxdiv.parametric._exponential_family import dirichlet_entropy
from jaxdiv.parametric._exponential_family import dirichlet_kl_divergence
from jaxdiv.parametric._exponential_family import dirichlet_renyi_divergence
from jaxdiv.parametric._exponential_family import exponential_entropy
from jaxdiv.parametric._exponential_family import exponential_kl_divergence
from jaxdiv.parametric._exponential_family import exponential_renyi_divergence
from jaxdiv.parametric._exponential_family import gamma_entropy
from jaxdiv.parametric._exponential_family import gamma_kl_divergence
from jaxdiv.parametric._exponential_family import gamma_renyi_divergence
from jaxdiv.parametric._exponential_family import poisson_entropy
from jaxdiv.parametric._exponential_family import poisson_kl_divergence
from jaxdiv.parametric._exponential_family import poisson_renyi_divergence
from jaxdiv.parametric._location_scale import gumbel_entropy
from jaxdiv.parametric._location_scale import gumbel_kl_divergence
from jaxdiv.parametric._location_scale import laplace_entropy
from jaxdiv.parametric._location_scale import laplace_kl_divergence
from jaxdiv.parametric._location_scale import log_normal_entropy
from jaxdiv.parametric._location_scale import log_normal_kl_divergence
from jaxdiv.parametric._location_scale import uniform_entropy
from jaxdiv.parametric._location_scale import uniform_kl_divergence
from jaxdiv.parametric._location_scale import von_mises_entropy
from jaxdiv.parametric._location_scale import von_mises_kl_divergence
from jaxdiv.parametric._mvn import mvn_bhattacharyya_distance
from jaxdiv.parametric._mvn import mvn_entropy
from jaxdiv.parametric._mvn import mvn_hellinger_distance
from jaxdiv.parametric._mvn import mvn_jeffreys_divergence
from jaxdiv.parametric._mvn import mvn_kl_divergence
from jaxdiv.parametric._mvn import mvn_renyi_divergence
from jaxdiv.parametric._mvn import mvn_wasserstein_distance
from jaxdiv.parametric._normal import normal_bhattacharyya_distance
from jaxdiv.parametric._normal import normal_entropy
from jaxdiv.parametric._normal import normal_hellinger_distance
from jaxdiv.parametric._normal import normal_jeffreys_divergence
from jaxdiv.parametric._normal import normal_kl_divergence
from jaxdiv.parametric._normal import normal_kl_divergence_from_log_variance
from jaxdiv.parametric._normal import normal_renyi_divergence
from jaxdiv.parametric._normal import normal_vae_kl
from jaxdiv.parametric._normal import normal_wasserstein_distance

_checks.register(__name__, _checkify.check_arguments)
