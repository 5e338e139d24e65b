"""Divergences between categorical distributions, computed in log space."""

from jaxdiv.discrete._binary import binary_cross_entropy
from jaxdiv.discrete._binary import binary_entropy
from jaxdiv.discrete._binary import binary_kl_divergence
from jaxdiv.discrete._f import bhattacharyya_distance
from jaxdiv.discrete._f import chi_squared_divergence
from jaxdiv.discrete._f import f_divergence
from jaxdiv.discrete._f import hellinger_distance
from jaxdiv.discrete._f import total_variation_distance
from jaxdiv.discrete._renyi import alpha_divergence
from jaxdiv.discrete._renyi import renyi_divergence
from jaxdiv.discrete._renyi import renyi_entropy
from jaxdiv.discrete._renyi import tsallis_divergence
from jaxdiv.discrete._renyi import tsallis_entropy
from jaxdiv.discrete._shannon import cross_entropy
from jaxdiv.discrete._shannon import entropy
from jaxdiv.discrete._shannon import jeffreys_divergence
from jaxdiv.discrete._shannon import js_distance
from jaxdiv.discrete._shannon import js_divergence
from jaxdiv.discrete._shannon import kl_divergence
