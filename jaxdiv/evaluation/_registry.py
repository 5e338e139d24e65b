"""The divergences that :func:`evaluate` and `jaxdiv eval` select by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import NamedTuple

import jax

from jaxdiv import discrete

_CORE = (
    "kl_divergence", "cross_entropy", "jeffreys_divergence", "js_divergence", "js_distance",
    "entropy", "renyi_divergence", "renyi_entropy", "tsallis_divergence", "tsallis_entropy",
    "alpha_divergence", "hellinger_distance", "total_variation_distance",
    "chi_squared_divergence", "bhattacharyya_distance", "binary_entropy",
    "binary_cross_entropy", "binary_kl_divergence",
)
_HYPERPARAMETERS = ("alpha", "beta", "base")


class DivergenceSpec(NamedTuple):
  """A divergence that :func:`evaluate` (and the CLI) can select by name.

  Attributes:
    name: the function's name in :mod:`jaxdiv`.
    fn: the function.
    n_inputs: 1 for a function of p alone (entropies), 2 for one of p and q; 0 for a callable
      the caller passed (decided by the inputs).
    params: the hyperparameters it accepts among alpha, beta, base.
    required: those without a default.
    inputs: what its inputs hold without `from_logits`: ``"distribution"`` (rows that sum to
      1), ``"bernoulli"`` (independent probabilities in [0, 1]) or ``"any"`` (a callable).
  """

  name: str
  fn: Callable[..., jax.Array]
  n_inputs: int
  params: tuple[str, ...]
  required: tuple[str, ...]
  inputs: str = "any"

  def unknown_and_missing(self, given) -> tuple[list[str], list[str]]:
    """The hyperparameters among `given` that this divergence does not take (sorted), and those
    it needs that `given` lacks; the callers (`evaluate`, the CLI) word the error."""
    return (sorted(set(given) - set(self.params)),
            [k for k in self.required if k not in given])

  def nonfinite_on_bad_rows(self, kwargs) -> bool:
    """Whether, called with `kwargs`, this divergence gives a NaN or infinite value on every
    row that holds a NaN or infinite input (with logits: NaN or +inf; -inf is a zero
    probability). :func:`evaluate` then flags such rows only where a value is not finite.

    True of the core family (tests/evaluation/test_evaluate_bad_rows.py checks every member,
    input and hyperparameter class), except the Bernoulli forms from logits (a +inf logit is a
    probability of 1, with a finite value) and under a mask (a masked entry does not enter the
    value). Never assumed of a callable.
    """
    if not self.n_inputs or "where" in kwargs:
      return False
    return not (self.inputs == "bernoulli" and kwargs.get("from_logits", False))


def _spec(name: str) -> DivergenceSpec:
  fn = getattr(discrete, name)
  sig = inspect.signature(fn).parameters
  n_inputs = sum(k in sig for k in ("p", "q"))
  params = tuple(k for k in _HYPERPARAMETERS if k in sig)
  required = tuple(k for k in params if sig[k].default is inspect.Parameter.empty)
  inputs = "bernoulli" if name.startswith("binary") else "distribution"
  return DivergenceSpec(name, fn, n_inputs, params, required, inputs)


DIVERGENCES: dict[str, DivergenceSpec] = {name: _spec(name) for name in _CORE}


def resolve(divergence: str | Callable) -> DivergenceSpec:
  """The :class:`DivergenceSpec` for a name of the core family, or a wrapped callable."""
  if callable(divergence):
    name = getattr(divergence, "__name__", type(divergence).__name__)
    return DivergenceSpec(name, divergence, 0, (), ())
  if divergence not in DIVERGENCES:
    raise ValueError(f"unknown divergence {divergence!r}; valid names: "
                     + ", ".join(sorted(DIVERGENCES)))
  return DIVERGENCES[divergence]
