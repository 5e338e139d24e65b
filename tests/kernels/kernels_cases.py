"""Shared data and float64 references for the kernel tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiv import kernels as jaxdiv_kernels
from jaxdiv.kernels import _shapes

IMPLEMENTATIONS = jaxdiv_kernels.IMPLEMENTATIONS
N, V = _shapes.TEST_LOGITS
BLOCK = _shapes.TEST_BLOCK


def logits(seed, shape=(N, V), scale=3.0, neg_inf_frac=0.0):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=shape) * scale
  if neg_inf_frac:
    z = np.where(rng.random(shape) < neg_inf_frac, -np.inf, z)
  return z


def labels(seed, n=N, v=V, z=None):
  rng = np.random.default_rng(seed + 1000)
  y = rng.integers(0, v, n)
  if z is not None:  # a label whose logit is -inf has an infinite loss: pick a finite one
    for i in range(n):
      while not np.isfinite(z[i, y[i]]):
        y[i] = rng.integers(0, v)
  return y


def _jitted_value_and_grad(f, args, argnums, out_dtype):
  """f(*args) and the gradient of sum(f) (summed in `out_dtype`), as one jitted program: run
  eagerly, each op of a blockwise kernel and of its VJP compiles on its own, several times the
  cost of one compilation of both (the public functions are plain; callers jit them)."""
  def both(*a):
    grad = jax.grad(lambda *a: jnp.sum(f(*a).astype(out_dtype)), argnums=argnums)(*a)
    return f(*a), grad
  return jax.jit(both)(*args)


def value_and_grad64(f, *args, argnums=0):
  """Value and gradient of sum(f(*args)) in float64 (f is a reference, plain autodiff)."""
  with jax.enable_x64(True):
    args64 = [jnp.asarray(np.asarray(a, np.float64)) if np.asarray(a).dtype.kind == "f"
              else jnp.asarray(a) for a in args]
    value, grad = _jitted_value_and_grad(f, args64, argnums, jnp.float64)
    return np.asarray(value), jax.tree.map(np.asarray, grad)


def value_and_grad(f, *args, argnums=0):
  value, grad = _jitted_value_and_grad(f, args, argnums, jnp.float32)
  return np.asarray(value, np.float64), jax.tree.map(lambda g: np.asarray(g, np.float64), grad)


def tolerance(dtype, n_reduced):
  """(rtol, atol) for a quantity accumulated over `n_reduced` entries in `dtype` inputs."""
  eps = {jnp.float32: 1.2e-7, jnp.bfloat16: 7.8e-3}[jnp.dtype(dtype).type]
  return 8 * eps * np.sqrt(n_reduced), 8 * eps * np.sqrt(n_reduced)


def assert_close(actual, desired, dtype=jnp.float32, n_reduced=V, err_msg=""):
  rtol, atol = tolerance(dtype, n_reduced)
  np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol, err_msg=err_msg)
