"""Eager calls (a notebook's) compile once per shape, not on every call.

JAX caches a compiled loop (`lax.map`, `while_loop`, `fori_loop`, `lax.reduce`) by the
function it was built from: one built from a closure made inside each call is lowered and
compiled again on every eager call. `sinkhorn_divergence` of 256 and 200 samples took 2.6 s a
call that way, `mmd2` 650 ms, `knn_entropy` 330 ms, `dirichlet_kl_divergence` of 128 rows
500 ms and `renyi_divergence(p, q, 2.0)` of 128 x 512 70-140 ms (against 1-170 ms once
cached). Counted here: JAX's lowerings to MLIR (each jit cache miss lowers, whether or not the
persistent compilation cache then holds the executable).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from _helpers import tiered

import jaxdiv
from jaxdiv import estimators
from jaxdiv import kernels
from jaxdiv import losses
from jaxdiv import parametric

_LOWERINGS = [0]


def _count(event, duration, **kwargs):
  if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
    _LOWERINGS[0] += 1


jax.monitoring.register_event_duration_secs_listener(_count)

_RNG = np.random.default_rng(0)
_X = _RNG.normal(size=(64, 3)).astype(np.float32)
_Y = (_RNG.normal(size=(48, 3)) + 0.5).astype(np.float32)
# 128 x 512: the one-pass row reduction (`_fallback.row_reduce`) applies from 65536 entries.
_P, _Q = (_RNG.dirichlet(np.ones(512), 128).astype(np.float32) for _ in range(2))
_A, _B = (_RNG.normal(size=(16, 256)).astype(np.float32) for _ in range(2))
_POS = _RNG.uniform(0.5, 3.0, 16).astype(np.float32)
_CONC = _RNG.uniform(0.5, 3.0, (16, 4)).astype(np.float32)
_H = _RNG.normal(size=(16, 8)).astype(np.float32)
_W = (0.1 * _RNG.normal(size=(8, 256))).astype(np.float32)
_LABELS = _RNG.integers(0, 256, 16)

CASES = {
    "knn_entropy": lambda: estimators.knn_entropy(_X),
    "knn_kl_divergence": lambda: estimators.knn_kl_divergence(_X, _Y),
    "mmd2": lambda: estimators.mmd2(_X, _Y),
    "energy_distance": lambda: estimators.energy_distance(_X, _Y),
    "sinkhorn_divergence": lambda: estimators.sinkhorn_divergence(_X, _Y),
    "sliced_wasserstein_distance": lambda: estimators.sliced_wasserstein_distance(
        _X, _Y, key=jax.random.key(0)),
    "dirichlet_kl_divergence": lambda: parametric.dirichlet_kl_divergence(_CONC, _CONC[::-1]),
    "gamma_renyi_divergence": lambda: parametric.gamma_renyi_divergence(
        _POS, _POS[::-1], _POS[::-1], _POS, alpha=0.7),
    "renyi_divergence": lambda: jaxdiv.renyi_divergence(_P, _Q, 2.0),
    "total_variation_distance": lambda: jaxdiv.total_variation_distance(_P, _Q),
    "tsallis_entropy": lambda: jaxdiv.tsallis_entropy(_P, 2.0),
    "js_distance": lambda: jaxdiv.js_distance(_P, _Q),
    "kl_divergence masked": lambda: jaxdiv.kl_divergence(_P, _Q, where=_P > 1e-3),
    "kl_divergence logits": lambda: jaxdiv.kl_divergence(_A, _B, from_logits=True),
    "softmax_cross_entropy_with_integer_labels": lambda: (
        losses.softmax_cross_entropy_with_integer_labels(_A, _LABELS)),
    "cross_entropy_with_integer_labels chunked": lambda: (
        kernels.cross_entropy_with_integer_labels(_A, _LABELS, implementation="chunked")),
    "fused_linear_cross_entropy": lambda: losses.fused_linear_cross_entropy(_H, _W, _LABELS),
}


@tiered("name", list(CASES), fast=["sinkhorn_divergence", "mmd2", "knn_entropy",
                                   "dirichlet_kl_divergence", "renyi_divergence"])
def test_an_eager_call_does_not_compile_again(name):
  fn = CASES[name]
  first = jax.block_until_ready(fn())
  jax.block_until_ready(fn())
  before = _LOWERINGS[0]
  again = jax.block_until_ready(fn())
  assert _LOWERINGS[0] == before, f"{name}: {_LOWERINGS[0] - before} lowerings on a third call"
  np.testing.assert_array_equal(np.asarray(again), np.asarray(first))
  assert np.all(np.isfinite(np.asarray(jnp.asarray(again))))


def test_the_counter_sees_a_compilation():
  """The check above can fail: a jit of a new function is counted."""
  before = _LOWERINGS[0]
  jax.jit(lambda x: x * 3.0 + 1.0)(np.float32(2.0))
  assert _LOWERINGS[0] > before
