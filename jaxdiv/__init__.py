"""jaxdiv: entropies and divergences between probability distributions, as pure JAX functions.

The whole public API, one name a line, below: each name and the module it comes from. Names
are imported on first use (PEP 562), so that `import jaxdiv` does not import JAX: the `jaxdiv`
command answers `--help` at once and handles Ctrl-C from its first instant. `jaxdiv.kl_divergence`
and `from jaxdiv import kl_divergence` work as with eager imports.
"""

import importlib
import importlib.util
from typing import TYPE_CHECKING

from jaxdiv._version import __version__

_API = {
    "checks": "jaxdiv.checks",
    "estimators": "jaxdiv.estimators",
    "kernels": "jaxdiv.kernels",
    "losses": "jaxdiv.losses",
    "parametric": "jaxdiv.parametric",
    "alpha_divergence": "jaxdiv.discrete",
    "bhattacharyya_distance": "jaxdiv.discrete",
    "binary_cross_entropy": "jaxdiv.discrete",
    "binary_entropy": "jaxdiv.discrete",
    "binary_kl_divergence": "jaxdiv.discrete",
    "chi_squared_divergence": "jaxdiv.discrete",
    "cross_entropy": "jaxdiv.discrete",
    "entropy": "jaxdiv.discrete",
    "f_divergence": "jaxdiv.discrete",
    "hellinger_distance": "jaxdiv.discrete",
    "jeffreys_divergence": "jaxdiv.discrete",
    "js_distance": "jaxdiv.discrete",
    "js_divergence": "jaxdiv.discrete",
    "kl_divergence": "jaxdiv.discrete",
    "renyi_divergence": "jaxdiv.discrete",
    "renyi_entropy": "jaxdiv.discrete",
    "total_variation_distance": "jaxdiv.discrete",
    "tsallis_divergence": "jaxdiv.discrete",
    "tsallis_entropy": "jaxdiv.discrete",
    "EvalResult": "jaxdiv.evaluation",
    "evaluate": "jaxdiv.evaluation",
}

__all__ = sorted(_API, key=lambda name: (name[0].islower(), name))


def __getattr__(name: str):
  module = _API.get(name)
  if module is None:
    # A subpackage (`jaxdiv.discrete`, `jaxdiv.evaluation`): importing the names above used
    # to bind these as a side effect; keep `import jaxdiv; jaxdiv.discrete` working.
    if name.startswith("__") or importlib.util.find_spec(f"jaxdiv.{name}") is None:
      raise AttributeError(f"module 'jaxdiv' has no attribute {name!r}")
    return importlib.import_module(f"jaxdiv.{name}")
  value = importlib.import_module(module)
  if module != f"jaxdiv.{name}":
    value = getattr(value, name)
  globals()[name] = value  # the next access does not come here
  return value


def __dir__():
  return sorted(set(globals()) | set(_API))


if TYPE_CHECKING:  # what type checkers and IDEs read
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
