"""Top-k teacher distillation (over logits and fused with the student's head) against float64
dense references written here: full softmax, tail mass summed over the other columns."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import tiered

from jaxdiv.losses import fused_linear_topk_distillation_loss
from jaxdiv.losses import topk_distillation_loss

N, D, V, K = 13, 24, 300, 8
BLOCK = 128  # does not divide V
BETA = 0.3


def _teacher(seed, n=N, v=V, k=K, temperature=1.0, neg_inf=False):
  """The top k of a random teacher's full log-softmax (float64), some entries -inf."""
  rng = np.random.default_rng(seed)
  zt = rng.normal(size=(n, v)) * 2.0
  lt = np.asarray(jax.nn.log_softmax(jnp.asarray(zt / temperature)), np.float64)
  idx = np.argsort(-lt, axis=-1)[:, :k]
  rng.shuffle(idx, axis=1)  # the order of the stored entries does not matter
  lp = np.take_along_axis(lt, idx, -1)
  if neg_inf:
    lp[::3, -1] = -np.inf  # the teacher's probability there is 0
  return idx, lp


def _student(seed, n=N, v=V):
  rng = np.random.default_rng(seed + 100)
  h = rng.normal(size=(n, D))
  w = rng.normal(size=(D, v)) * 1.5 / np.sqrt(D) * 2
  where = rng.random(n) > 0.2
  return h, w, where


def _dense64(z, idx, lp, where, *, divergence, tail, temperature=1.0):
  """Float64: softmax of z / T; bins by a column mask over the whole vocabulary."""
  q = jax.nn.softmax(z / temperature)
  member = jnp.zeros(z.shape, bool).at[jnp.arange(z.shape[0])[:, None], idx].set(True)
  q_k = jnp.take_along_axis(q, idx, -1)
  p_k = jnp.exp(lp)
  if tail == "bin":
    q_b = jnp.concatenate([q_k, jnp.sum(jnp.where(member, 0.0, q), -1, keepdims=True)], -1)
    p_b = jnp.concatenate([p_k, 1.0 - jnp.sum(p_k, -1, keepdims=True)], -1)
  else:
    q_b = q_k / jnp.sum(q_k, -1, keepdims=True)
    p_b = p_k / jnp.sum(p_k, -1, keepdims=True)

  def kl(a, b):
    safe = jnp.where(a > 0, a, 1.0)
    return jnp.sum(jnp.where(a > 0, a * (jnp.log(safe) - jnp.log(b)), 0.0), -1)

  if divergence == "forward_kl":
    out = kl(p_b, q_b)
  elif divergence == "reverse_kl":
    out = kl(q_b, p_b)
  else:
    m = BETA * p_b + (1 - BETA) * q_b
    out = BETA * kl(p_b, m) + (1 - BETA) * kl(q_b, m)
  return jnp.where(where, out, 0.0)


def _jitted_value_and_grad(f, cot, argnums, out_dtype):
  """f and the gradient of sum(cot * f) as one jitted program (eagerly, each op of a blockwise
  kernel and of its VJP compiles on its own)."""
  return jax.jit(lambda *a: (f(*a), jax.grad(
      lambda *a: jnp.sum(cot * f(*a).astype(out_dtype)), argnums)(*a)))


def _ref(z_fn, args, argnums, **kw):
  """Value and gradient (of sum(cot * loss)) of the dense float64 loss of `z_fn(*args)`."""
  *student, idx, lp, where = args
  cot = np.linspace(0.5, 1.5, idx.shape[0])
  with jax.enable_x64(True):
    f = lambda *s: _dense64(z_fn(*s), jnp.asarray(idx), jnp.asarray(lp), jnp.asarray(where),
                            **kw)
    s64 = [jnp.asarray(s, jnp.float64) for s in student]
    value, grads = _jitted_value_and_grad(f, cot, argnums, jnp.float64)(*s64)
    return [np.asarray(x) for x in (value, *grads)]


def _ours(f, student, argnums, dtype=jnp.float32):
  cot = np.linspace(0.5, 1.5, student[0].shape[0])
  s = [jnp.asarray(x, dtype) for x in student]
  out_dtype = jnp.promote_types(dtype, jnp.float32)
  value, grads = _jitted_value_and_grad(f, cot, argnums, out_dtype)(*s)
  return [np.asarray(x, np.float64) for x in (value, *grads)]


def _assert_close(got, want, rtol):
  for k, (a, b) in enumerate(zip(got, want)):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max(), err_msg=str(k))


# A compilation a case: the fast tier keeps each divergence and tail once.
@tiered("divergence,tail", [(d, t) for d in ("forward_kl", "reverse_kl", "js")
                            for t in ("bin", "renormalize")])
def test_topk_over_logits_matches_float64_reference(divergence, tail):
  h, w, where = _student(0)
  z = h @ w
  idx, lp = _teacher(0, temperature=1.3, neg_inf=divergence != "reverse_kl")
  kw = dict(divergence=divergence, tail=tail, temperature=1.3)
  want = _ref(lambda z: z, (z, idx, lp, where), (0,), **kw)
  f = lambda z: topk_distillation_loss(z, idx, lp, where=where, beta=BETA, **kw)
  got = _ours(f, [z], (0,))
  _assert_close(got, want, rtol=1e-5)
  assert np.all(got[0][~where] == 0) and np.all(got[1][~where] == 0)
  assert np.all(got[0][where] > 0)


# The fast tier keeps each implementation, divergence, tail, layout and cap once.
@tiered("implementation,divergence,tail,layout,softcap", [
    ("chunked", "forward_kl", "bin", "dv", None), ("chunked", "reverse_kl", "bin", "vd", 3.0),
    ("chunked", "js", "renormalize", "dv", 3.0), ("xla", "forward_kl", "renormalize", "vd", None),
    ("xla", "js", "bin", "dv", 3.0), ("pallas", "reverse_kl", "bin", "dv", 3.0),
    ("pallas", "forward_kl", "renormalize", "vd", None)],
    fast=[("chunked", "js", "renormalize", "dv", 3.0),
          ("xla", "forward_kl", "renormalize", "vd", None),
          ("pallas", "reverse_kl", "bin", "dv", 3.0)])
def test_fused_matches_float64_reference(implementation, divergence, tail, layout, softcap):
  h, w, where = _student(1)
  idx, lp = _teacher(1, temperature=0.8, neg_inf=divergence == "js")
  kw = dict(divergence=divergence, tail=tail, temperature=0.8)
  cap = (lambda x: softcap * jnp.tanh(x / softcap)) if softcap else (lambda x: x)
  want = _ref(lambda h, w: cap(h @ w), (h, w, idx, lp, where), (0, 1), **kw)
  w_in = w.T if layout == "vd" else w
  f = lambda h, w: fused_linear_topk_distillation_loss(
      h, w, idx, lp, where=where, beta=BETA, softcap=softcap, implementation=implementation,
      block_size=BLOCK, weight_layout=layout, **kw)
  got = _ours(f, [h, w_in], (0, 1))
  if layout == "vd":
    got[2] = got[2].T
  _assert_close(got, want, rtol=2e-5)


# The fast tier keeps "chunked"; "xla" is slow.
@tiered("implementation", ["chunked", "xla"], fast=["chunked"])
def test_fused_float64_inputs_get_float64_accuracy(implementation):
  h, w, where = _student(2)
  idx, lp = _teacher(2)
  kw = dict(divergence="forward_kl", tail="bin")
  want = _ref(lambda h, w: h @ w, (h, w, idx, lp, where), (0, 1), **kw)
  with jax.enable_x64(True):
    f = lambda h, w: fused_linear_topk_distillation_loss(
        h, w, idx, lp, where=where, implementation=implementation, block_size=BLOCK, **kw)
    got = _ours(f, [h, w], (0, 1), dtype=jnp.float64)
  _assert_close(got, want, rtol=1e-12)


def test_fused_bfloat16_accumulates_in_float32():
  h, w, where = _student(3)
  idx, lp = _teacher(3)
  h, w = (np.asarray(jnp.asarray(a, jnp.bfloat16), np.float64) for a in (h, w))
  want = _ref(lambda h, w: h @ w, (h, w, idx, lp, where), (0, 1), divergence="js", tail="bin")
  f = lambda h, w: fused_linear_topk_distillation_loss(h, w, idx, lp, where=where,
                                                       divergence="js", beta=BETA, block_size=BLOCK)
  got = _ours(f, [h, w], (0, 1), dtype=jnp.bfloat16)
  for a, b, rtol in zip(got, want, (8e-3, 3e-2, 3e-2)):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


def test_bin_is_at_most_the_full_kl_and_reductions():
  """Binning coarsens both distributions: the forward KL can only drop (data processing)."""
  h, w, where = _student(4)
  rng = np.random.default_rng(4)
  zt = rng.normal(size=(N, V)) * 2.0
  lt = np.asarray(jax.nn.log_softmax(jnp.asarray(zt)))
  idx = np.argsort(-lt, -1)[:, :K]
  lp = np.take_along_axis(lt, idx, -1)
  z = (h @ w).astype(np.float32)
  binned = topk_distillation_loss(z, idx, lp)
  full = np.sum(np.exp(lt) * (lt - np.asarray(jax.nn.log_softmax(z), np.float64)), -1)
  assert np.all(np.asarray(binned) <= full + 1e-5)
  per = topk_distillation_loss(z, idx, lp, where=where)
  np.testing.assert_allclose(topk_distillation_loss(z, idx, lp, where=where, reduction="mean"),
                             np.sum(per) / np.sum(where), rtol=1e-6)
  np.testing.assert_allclose(topk_distillation_loss(z, idx, lp, where=where, reduction="sum"),
                             np.sum(per), rtol=1e-6)


def test_bad_teacher_gives_nan_and_bad_shapes_raise():
  h, w, _ = _student(5)
  z = (h @ w).astype(np.float32)
  idx, lp = _teacher(5)
  idx, lp = idx.copy(), lp.copy()
  idx[0, 1] = idx[0, 0]  # repeated
  idx[1, 0] = V  # out of range
  lp[2, :] = np.log(0.2)  # mass 8 * 0.2 > 1
  for f in (lambda: topk_distillation_loss(z, idx, lp),
            lambda: fused_linear_topk_distillation_loss(h, w, idx, lp)):
    out = np.asarray(f())
    assert np.all(np.isnan(out[:3])) and np.all(np.isfinite(out[3:])), out
  with pytest.raises(ValueError, match="teacher_indices"):
    topk_distillation_loss(z, idx[:, None], lp)
  with pytest.raises(ValueError, match="teacher_log_probs"):
    topk_distillation_loss(z, idx, lp[:, :2])
  with pytest.raises(ValueError, match="k = "):
    topk_distillation_loss(z[:, :4], idx, lp)
  with pytest.raises(TypeError, match="teacher_indices"):
    topk_distillation_loss(z, idx.astype(np.float32), lp)
  with pytest.raises(ValueError, match="tail"):
    topk_distillation_loss(z, idx, lp, tail="drop")
  with pytest.raises(ValueError, match="implementation"):
    fused_linear_topk_distillation_loss(h, w, idx, lp, implementation="triton")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU buffer assignment")
def test_fused_memory_is_blockwise():
  n, d, v, k = 1024, 64, 16384, 32
  shapes = (jax.ShapeDtypeStruct((n, d), jnp.float32), jax.ShapeDtypeStruct((d, v), jnp.float32),
            jax.ShapeDtypeStruct((n, k), jnp.int32), jax.ShapeDtypeStruct((n, k), jnp.float32))
  f = lambda h, w, i, lp: fused_linear_topk_distillation_loss(h, w, i, lp, reduction="mean",
                                                              block_size=512)
  mem = jax.jit(jax.value_and_grad(f, (0, 1))).lower(*shapes).compile().memory_analysis()
  assert mem.temp_size_in_bytes < n * v * 4 / 8, mem


def test_certain_student_against_a_teacher_tail_stays_finite():
  """A student whose mass outside the top k is below float32's eps: the binned forward KL is
  finite, as are its gradients (its tail is floored at k eps)."""
  z = np.zeros((2, 50), np.float32)
  z[:, :4] = 40.0  # tail mass ~ 46 e^-40, far below eps
  idx = np.tile(np.arange(4), (2, 1))
  lp = np.log(np.full((2, 4), 0.24))  # teacher tail 0.04
  for divergence in ("forward_kl", "reverse_kl", "js"):
    f = lambda z, d=divergence: topk_distillation_loss(z, idx, lp, divergence=d)
    value, grad = _jitted_value_and_grad(f, 1.0, 0, jnp.float32)(jnp.asarray(z))
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad)), divergence
    assert np.all(np.asarray(value) > 0)
