"""The table every discrete test iterates over: jaxdiv function, float64 reference, arity."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import discrete_reference as ref
import numpy as np
from _helpers import tiered

import jaxdiv


@dataclasses.dataclass(frozen=True)
class Spec:
  name: str
  fn: Callable
  ref: Callable
  nargs: int
  kwargs: dict = dataclasses.field(default_factory=dict)
  has_base: bool = False
  symmetric: bool = False
  # Smooth in the interior of the simplex (check_grads of order 2 applies).
  smooth: bool = True
  # Log-space reference on logits, for logits whose float64 softmax underflows.
  logits_ref: Callable | None = None
  # Exact for logits of any size (f_divergence with a generic f is not: see its docstring).
  extreme_logits: bool = True

  def __call__(self, *args, **kw):
    return self.fn(*args, **self.kwargs, **kw)

  def reference(self, *args):
    return self.ref(*args, **self.kwargs)

  def __repr__(self):
    return self.name


def _p(name, fn, ref_fn, nargs, **kw):
  return Spec(name, fn, ref_fn, nargs, **kw)


_tv_f = lambda t: 0.5 * np.abs(t - 1)

SPECS = [
    _p("entropy", jaxdiv.entropy, ref.entropy, 1, has_base=True),
    _p("cross_entropy", jaxdiv.cross_entropy, ref.cross_entropy, 2, has_base=True),
    _p("kl_divergence", jaxdiv.kl_divergence, ref.kl_divergence, 2, has_base=True),
    _p("jeffreys_divergence", jaxdiv.jeffreys_divergence, ref.jeffreys_divergence, 2,
       has_base=True, symmetric=True),
    _p("js_divergence", jaxdiv.js_divergence, ref.js_divergence, 2, has_base=True,
       symmetric=True),
    Spec("js_divergence[beta=0.2]", jaxdiv.js_divergence, ref.js_divergence, 2, {"beta": 0.2},
         has_base=True),
    _p("js_distance", jaxdiv.js_distance, ref.js_distance, 2, has_base=True, symmetric=True,
       smooth=False),
    *[Spec(f"renyi_divergence[alpha={a}]", jaxdiv.renyi_divergence, ref.renyi_divergence, 2,
           {"alpha": a}, has_base=True, smooth=not np.isinf(a) and a != 0,
           logits_ref=ref.renyi_divergence_logits)
      for a in (0.0, 0.5, 1.0, 2.0, 7.5, np.inf)],
    *[Spec(f"renyi_entropy[alpha={a}]", jaxdiv.renyi_entropy, ref.renyi_entropy, 1,
           {"alpha": a}, has_base=True, smooth=not np.isinf(a) and a != 0,
           logits_ref=ref.renyi_entropy_logits)
      for a in (0.0, 0.5, 1.0, 2.0, np.inf)],
    *[Spec(f"tsallis_entropy[alpha={a}]", jaxdiv.tsallis_entropy, ref.tsallis_entropy, 1,
           {"alpha": a}, smooth=a != 0, logits_ref=ref.tsallis_entropy_logits)
      for a in (0.0, 0.5, 1.0, 3.0)],
    *[Spec(f"tsallis_divergence[alpha={a}]", jaxdiv.tsallis_divergence, ref.tsallis_divergence,
           2, {"alpha": a}, logits_ref=ref.tsallis_divergence_logits) for a in (0.5, 1.0, 2.0)],
    *[Spec(f"alpha_divergence[alpha={a}]", jaxdiv.alpha_divergence, ref.alpha_divergence, 2,
           {"alpha": a}, logits_ref=ref.alpha_divergence_logits)
      for a in (-1.0, 0.0, 0.3, 0.5, 1.0, 2.0)],
    _p("hellinger_distance", jaxdiv.hellinger_distance, ref.hellinger_distance, 2,
       symmetric=True, smooth=False),
    _p("total_variation_distance", jaxdiv.total_variation_distance,
       ref.total_variation_distance, 2, symmetric=True, smooth=False),
    _p("chi_squared_divergence", jaxdiv.chi_squared_divergence, ref.chi_squared_divergence, 2,
       logits_ref=ref.chi_squared_divergence_logits),
    _p("bhattacharyya_distance", jaxdiv.bhattacharyya_distance, ref.bhattacharyya_distance, 2,
       has_base=True, symmetric=True),
    Spec("f_divergence[tv]", jaxdiv.f_divergence,
         functools.partial(ref.f_divergence, f=_tv_f, f_prime_inf=0.5, f_zero=0.5), 2,
         {"f": lambda t: 0.5 * abs(t - 1)}, symmetric=True, smooth=False),
    Spec("f_divergence[kl]", jaxdiv.f_divergence,
         functools.partial(ref.f_divergence, f=lambda t: t * np.log(t), f_prime_inf=np.inf,
                           f_zero=0.0), 2,
         {"f": lambda t: t * __import__("jax").numpy.log(t)}, extreme_logits=False),
]

SPEC_IDS = [s.name for s in SPECS]
TWO_ARG = [s for s in SPECS if s.nargs == 2]

# The specs a test over every spec keeps in the fast tier: each public function once, and the
# order family's orders spread over its code paths: 0.5 with two inputs (the guarded power
# mean), 2.0 and 3.0 (the unguarded power sums of `_fast`, two inputs and one), 1.0 and inf
# (the exact branches), 0 (the support count) and -1 (negative orders). The other 18 specs
# repeat one of these paths with another constant: they run in the slow tier.
FAST_SPEC_IDS = (
    "entropy", "cross_entropy", "kl_divergence", "jeffreys_divergence", "js_divergence",
    "js_distance", "renyi_divergence[alpha=0.5]", "renyi_divergence[alpha=2.0]",
    "renyi_divergence[alpha=inf]", "renyi_entropy[alpha=0.0]", "tsallis_entropy[alpha=3.0]",
    "tsallis_divergence[alpha=1.0]", "alpha_divergence[alpha=-1.0]", "hellinger_distance",
    "total_variation_distance", "chi_squared_divergence", "bhattacharyya_distance",
    "f_divergence[tv]", "f_divergence[kl]",
)


# For the tests of a transformation (jit, vmap, jacfwd, an axis, a mask, a dtype), whose code
# is one wrapper shared by every function, the fast tier keeps one spec per mechanism beneath
# it: the Shannon family with one input and two (its fast path), a composite (JS distance, a
# square root of a sum of two KLs), the order family's guarded mean and unguarded power sums
# (two inputs and one) and a negative order, and the f-family's closed form and its user
# generator. Every spec is in the slow tier; the per-function value tests
# (`test_discrete_reference.py`) keep all of them fast.
MECHANISM_SPEC_IDS = (
    "entropy", "kl_divergence", "js_distance", "renyi_divergence[alpha=0.5]",
    "renyi_divergence[alpha=2.0]", "tsallis_entropy[alpha=3.0]", "alpha_divergence[alpha=-1.0]",
    "hellinger_distance", "f_divergence[kl]",
)


def over_specs(specs=SPECS, fast_ids=FAST_SPEC_IDS):
  """`pytest.mark.parametrize("spec", specs)`, with the specs outside `fast_ids` in the slow
  tier."""
  specs = list(specs)
  return tiered("spec", specs, fast=[s for s in specs if s.name in fast_ids],
                ids=lambda s: s.name)


def call(spec: Spec, p, q=None, **kw):
  return spec(p, **kw) if spec.nargs == 1 else spec(p, q, **kw)


def logits_reference(spec: Spec, zp, zq=None):
  args = (zp,) if spec.nargs == 1 else (zp, zq)
  return spec.logits_ref(*args, **{k: v for k, v in spec.kwargs.items() if k == "alpha"})


def reference(spec: Spec, p, q=None):
  return spec.reference(p) if spec.nargs == 1 else spec.reference(p, q)
