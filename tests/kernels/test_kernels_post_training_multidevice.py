"""Vocabulary parallelism (`axis_name`) of the post-training kernels on 8 CPU devices.

As `tests/evaluation/test_multidevice.py`: tests/conftest.py gives the CPU platform 8 devices
before JAX starts, so these run in the suite's own process.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import CHECK_FLAG
from _helpers import N_DEVICES
from _helpers import cpu_mesh
from _helpers import needs_8
from _helpers import shard_map
from _helpers import tiered
from jax.sharding import PartitionSpec as P

import jaxdiv

pytestmark = pytest.mark.multidevice
N, D, V = 12, 16, N_DEVICES * 37  # 37 columns a shard: not a multiple of the block (16)


def _inputs(seed, layout, n=N, v=V):
  rng = np.random.default_rng(seed)
  h = rng.normal(size=(n, D))
  w = rng.normal(size=(D, v)) * 3 / np.sqrt(D)
  y = rng.integers(0, v, n)
  where = rng.random(n) > 0.2
  w = w.T if layout == "vd" else w
  return (jnp.asarray(h, jnp.float32), jnp.asarray(w, jnp.float32), jnp.asarray(y, jnp.int32),
          jnp.asarray(where))


def _sharded(fn, layout, check=True):
  mesh = cpu_mesh(N_DEVICES, "vocab")
  w_spec = P("vocab", None) if layout == "vd" else P(None, "vocab")
  return shard_map(lambda h, w, y, m: fn(h, w, y, m, axis_name="vocab"), mesh=mesh,
                   in_specs=(P(), w_spec, P(), P()), out_specs=P(),
                   **({} if check else {CHECK_FLAG: False}))


def _compare(sharded, one, args, rtol=2e-6):
  """Outputs and the gradients of hidden and weight through all of them, sharded vs one."""
  n = args[0].shape[0]

  def objective(f):
    def total(h, w):
      outs = jax.tree.leaves(f(h, w, *args[2:]))
      return sum(jnp.sum(jnp.cos(jnp.arange(n) + k) * o.astype(jnp.float32))
                 for k, o in enumerate(outs))
    return total

  results = []
  for f in (sharded, one):
    grads = jax.jit(jax.grad(objective(f), (0, 1)))(*args[:2])
    results.append((*jax.tree.leaves(jax.jit(f)(*args)), *grads))
  for got, want in zip(*results):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


# Each case compiles a sharded and a one-device program: the fast tier keeps one case of each
# function; the two have each implementation, layout and check between them.
@needs_8
@tiered("implementation,layout,check", [
    ("chunked", "dv", True), ("chunked", "vd", False), ("xla", "vd", True)],
    fast=[("chunked", "vd", False)])
def test_vocab_parallel_token_log_probs(implementation, layout, check):
  kw = dict(implementation=implementation, block_size=16, softcap=4.0, temperature=0.8,
            weight_layout=layout)
  fn = lambda h, w, y, m, axis_name=None: jaxdiv.losses.fused_linear_token_log_probs(
      h, w, y, where=m, axis_name=axis_name, **kw)
  _compare(_sharded(fn, layout, check), fn, _inputs(0, layout))


# Pallas interpret mode costs seconds: slow (the kernel runs in the fast tier on one device, in
# test_kernels_token_log_probs.py).
@needs_8
@pytest.mark.slow
def test_vocab_parallel_token_log_probs_pallas_interpret():
  kw = dict(implementation="pallas", block_size=16, softcap=4.0, weight_layout="vd")
  fn = lambda h, w, y, m, axis_name=None: jaxdiv.losses.fused_linear_token_log_probs(
      h, w, y, where=m, axis_name=axis_name, **kw)
  _compare(_sharded(fn, "vd", check=False), fn, _inputs(1, "vd", n=6, v=N_DEVICES * 20))


@needs_8
@tiered("implementation,layout,check", [
    ("chunked", "dv", True), ("chunked", "vd", False), ("xla", "dv", True)],
    fast=[("xla", "dv", True)])
def test_vocab_parallel_topk_distillation(implementation, layout, check):
  h, w, _, where = _inputs(2, layout)
  rng = np.random.default_rng(2)
  idx = jnp.asarray(np.stack([rng.choice(V, 5, replace=False) for _ in range(N)]), jnp.int32)
  lp = jnp.asarray(np.log(rng.dirichlet(np.ones(6), N)[:, :5]), jnp.float32)
  kw = dict(implementation=implementation, block_size=16, softcap=4.0, temperature=0.8,
            weight_layout=layout, divergence="js", beta=0.3)
  fn = lambda h, w, i, m, axis_name=None: jaxdiv.losses.fused_linear_topk_distillation_loss(
      h, w, i, lp, where=m, axis_name=axis_name, **kw)
  _compare(_sharded(fn, layout, check), fn, (h, w, idx, where))


# Pallas interpret mode: slow (the kernel runs in the fast tier on one device, in
# test_kernels_topk_distillation.py).
@needs_8
@pytest.mark.slow
def test_vocab_parallel_topk_distillation_pallas_interpret():
  h, w, _, where = _inputs(3, "vd", n=6, v=N_DEVICES * 20)
  rng = np.random.default_rng(3)
  idx = jnp.asarray(np.stack([rng.choice(N_DEVICES * 20, 4, replace=False) for _ in range(6)]),
                    jnp.int32)
  lp = jnp.asarray(np.log(rng.dirichlet(np.ones(5), 6)[:, :4]), jnp.float32)
  kw = dict(implementation="pallas", block_size=16, softcap=4.0, weight_layout="vd")
  fn = lambda h, w, i, m, axis_name=None: jaxdiv.losses.fused_linear_topk_distillation_loss(
      h, w, i, lp, where=m, axis_name=axis_name, **kw)
  _compare(_sharded(fn, "vd", check=False), fn, (h, w, idx, where))
