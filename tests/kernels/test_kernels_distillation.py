"""Distillation divergences over logits and over fused linear heads: every implementation
against the float64 reference, values and student gradients; the teacher gets none."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import tiered
from kernels_cases import BLOCK
from kernels_cases import IMPLEMENTATIONS
from kernels_cases import N
from kernels_cases import V
from kernels_cases import assert_close
from kernels_cases import logits
from kernels_cases import value_and_grad
from kernels_cases import value_and_grad64

import jaxdiv
from jaxdiv.kernels import distillation_divergence as dd
from jaxdiv.kernels import fused_linear_distillation_divergence as fldd
from jaxdiv.kernels.distillation import api
from jaxdiv.kernels.distillation import fused_linear_pallas
from jaxdiv.kernels.distillation import reference

SETTINGS = [("forward_kl", 0.5, 1.0), ("reverse_kl", 0.5, 2.0), ("js", 0.5, 1.0),
            ("js", 0.1, 0.7)]


def _ref(valid, divergence, beta, temperature):
  return lambda zs, zt: reference.divergence(zs, zt, jnp.asarray(valid), divergence=divergence,
                                             beta=beta, temperature=temperature)


def _plain_divergences(zs, zt):
  """{(divergence, beta): per-token value} of forward and reverse KL and of JS at beta 0, 0.3
  and 1, from student and teacher logits in float64 by the core `jaxdiv.kl_divergence` /
  `js_divergence`: maths independent of the kernels."""
  s64, t64 = np.asarray(zs, np.float64), np.asarray(zt, np.float64)
  with jax.enable_x64(True):
    return {
        ("forward_kl", 0.5): jaxdiv.kl_divergence(t64, s64, from_logits=True),
        ("reverse_kl", 0.5): jaxdiv.kl_divergence(s64, t64, from_logits=True),
        **{("js", b): jaxdiv.js_divergence(t64, s64, beta=b, from_logits=True)
           for b in (0.0, 0.3, 1.0)},
    }


# Each case compiles: the fast tier keeps every implementation and every setting once.
@tiered("implementation,divergence,beta,temperature",
        [(i, *setting) for i in IMPLEMENTATIONS for setting in SETTINGS])
def test_matches_float64_reference(device, implementation, divergence, beta, temperature):
  zs, zt = logits(0), logits(1)
  # -inf in both (outside the support of both distributions) at the same places.
  off = np.random.default_rng(2).random((N, V)) < 0.1
  zs, zt = np.where(off, -np.inf, zs), np.where(off, -np.inf, zt)
  where = np.random.default_rng(3).random(N) > 0.2
  want, want_g = value_and_grad64(_ref(where, divergence, beta, temperature), zs, zt)
  f = functools.partial(dd, divergence=divergence, beta=beta, temperature=temperature,
                        where=jnp.asarray(where), implementation=implementation,
                        block_size=BLOCK)
  teacher = jnp.asarray(zt, jnp.float32)
  got, got_g = value_and_grad(lambda zs: f(zs, teacher), jnp.asarray(zs, jnp.float32))
  assert np.all(np.isfinite(got)) and np.all(np.isfinite(got_g))
  assert_close(got, want, err_msg="divergence")
  assert_close(got_g, want_g, n_reduced=1, err_msg="d student")
  teacher_grad = jax.jit(jax.grad(lambda zt: f(jnp.asarray(zs, jnp.float32), zt).sum()))(teacher)
  assert np.all(np.asarray(teacher_grad) == 0)


# Pallas interpret mode costs seconds: its case is slow (the kernel runs in the fast tier in
# test_matches_float64_reference).
@tiered("implementation", IMPLEMENTATIONS, fast=["xla", "chunked"])
def test_support_mismatch(device, implementation):
  """A student with no mass where the teacher has some makes the forward KL of those tokens
  infinite, a teacher with no mass where the student has some the reverse KL (the one-pass KL
  state keeps infinity through rescaling); the other tokens stay finite."""
  zs, zt = logits(8), logits(9, scale=6.0)
  rows = np.arange(N) % 3 == 0
  zs[rows, 5::7] = -np.inf
  zs[rows, 900:] = -np.inf  # the last vocabulary block too
  zt[1::4, 11::5] = -np.inf  # and the teacher without mass elsewhere
  zt[0, 600] = 200.0  # the teacher's max jumps after the KL is already infinite
  for divergence in ("forward_kl", "reverse_kl"):
    want = value_and_grad64(_ref(np.ones(N, bool), divergence, 0.5, 1.0), zs, zt)[0]
    got = np.asarray(jax.jit(functools.partial(
        dd, divergence=divergence, implementation=implementation, block_size=BLOCK))(
            jnp.asarray(zs, jnp.float32), jnp.asarray(zt, jnp.float32)), np.float64)
    assert np.array_equal(np.isinf(got), np.isinf(want)), divergence
    # Infinite where the weighting side has mass that the other lacks.
    lacking = rows if divergence == "forward_kl" else np.arange(N) % 4 == 1
    np.testing.assert_array_equal(np.isinf(want), lacking)
    finite = np.isfinite(want)
    assert_close(got[finite], want[finite], err_msg=divergence)


@tiered("divergence,beta,temperature,teacher_kind,implementation",
        [(*setting, t, i) for i in IMPLEMENTATIONS for t in ("logits", "head")
         for setting in SETTINGS[1:3]])
def test_fused_linear_matches_reference(implementation, teacher_kind, divergence, beta,
                                        temperature):
  rng = np.random.default_rng(4)
  d, dt = 24, 40
  hs, ws = rng.normal(size=(N, d)), rng.normal(size=(V, d)) / np.sqrt(d) * 2  # tied layout
  ht, wt = rng.normal(size=(N, dt)), rng.normal(size=(dt, V)) / np.sqrt(dt) * 2
  where = rng.random(N) > 0.2
  cfg = dict(divergence=divergence, beta=beta, temperature=temperature)

  def ref(hs, ws, ht, wt):
    return reference.divergence(hs @ ws.T, ht @ wt, jnp.asarray(where), **cfg)

  want, (want_dh, want_dw) = value_and_grad64(ref, hs, ws, ht, wt, argnums=(0, 1))
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  if teacher_kind == "logits":
    teacher = dict(teacher_logits=jnp.dot(f32(ht), f32(wt), precision="highest"))
  else:
    teacher = dict(teacher_hidden=f32(ht), teacher_weight=f32(wt))
  f = lambda hs, ws: fldd(hs, ws, **teacher, where=jnp.asarray(where), **cfg,
                          implementation=implementation, block_size=256)
  got, (got_dh, got_dw) = value_and_grad(f, f32(hs), f32(ws), argnums=(0, 1))
  assert_close(got, want, n_reduced=V * d)
  assert_close(got_dh, want_dh, n_reduced=V)
  assert_close(got_dw, want_dw, n_reduced=N)


# Pallas interpret mode costs seconds: its case is slow (it runs in the fast tier above); so is
# xla (5 s): the fast tier keeps chunked here and xla in test_fused_linear_matches_reference.
@tiered("implementation", IMPLEMENTATIONS, fast=["chunked"])
def test_fused_linear_rows_without_mass_and_js_at_the_ends(implementation):
  """The fused API keeps `distillation_divergence`'s conventions: a teacher row of -inf logits
  gives 0 and no gradient, and JS at beta 0 and 1 is 0 with zero gradients even where the
  teacher misses part of the support (the kernels' (1 - beta) * KL(s || m) at beta 1 was
  0 * inf = NaN there, and an empty teacher row gave 0.25 for JS at beta 0.3); the other rows
  against the float64 maths of `jaxdiv.js_divergence` / `kl_divergence` from logits."""
  rng = np.random.default_rng(16)
  n, d, v = 12, 16, 200
  hs, ws = rng.normal(size=(n, d)), rng.normal(size=(d, v)) * 2 / np.sqrt(d)
  zt = 3 * rng.normal(size=(n, v))
  zt[3] = -np.inf  # no teacher distribution
  zt[7, ::3] = -np.inf  # the teacher misses a third of the vocabulary
  full = np.setdiff1d(np.arange(n), [3])
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  plain = _plain_divergences((hs @ ws)[full], zt[full])
  for (divergence, beta), want in plain.items():
    f = functools.partial(fldd, teacher_logits=f32(zt), divergence=divergence, beta=beta,
                          implementation=implementation, block_size=64)
    per_token = np.asarray(jax.jit(f)(f32(hs), f32(ws)))
    np.testing.assert_array_equal(per_token[3], 0)
    np.testing.assert_allclose(per_token[full], np.asarray(want), rtol=2e-4, atol=2e-6,
                               err_msg=f"{divergence} {beta}")
    if divergence == "reverse_kl":  # +inf on row 7: the summed loss has no gradient
      continue
    dh, dw = jax.jit(jax.grad(lambda h, w, f=f: jnp.sum(f(h, w)), argnums=(0, 1)))(
        f32(hs), f32(ws))
    assert np.isfinite(dh).all() and np.isfinite(dw).all(), (divergence, beta)
    np.testing.assert_array_equal(np.asarray(dh)[3], 0)
    if divergence == "js" and beta in (0.0, 1.0):
      np.testing.assert_allclose(dh, 0, atol=1e-6)
      np.testing.assert_allclose(dw, 0, atol=1e-6)
  # A teacher given as hidden states and a head: JS at beta 1 is 0 there too.
  ht, wt = rng.normal(size=(n, d)), rng.normal(size=(d, v))
  f = functools.partial(fldd, divergence="js", beta=1.0, implementation=implementation,
                        block_size=64)
  got, (dh, dw) = jax.jit(jax.value_and_grad(
      lambda h, w: jnp.sum(f(h, w, f32(ht), f32(wt))), argnums=(0, 1)))(f32(hs), f32(ws))
  assert float(got) == 0.0
  np.testing.assert_array_equal(dh, 0)
  np.testing.assert_array_equal(dw, 0)


# Pallas interpret mode costs seconds a case: the fast tier keeps the bfloat16 case (both weight
# layouts across student and teacher, the JS divergence); the float32 ones are slow.
@tiered("divergence,beta,temperature,layouts,dtype", [
    (*SETTINGS[0], (False, True), jnp.float32),
    (*SETTINGS[1], (True, True), jnp.float32),
    (*SETTINGS[3], (True, False), jnp.bfloat16),
], fast=[(*SETTINGS[3], (True, False), jnp.bfloat16)])
def test_fused_linear_pallas_tiles(divergence, beta, temperature, layouts, dtype):
  """The Pallas kernels with small tiles: several token blocks (the last one partial), a
  vocabulary that ends inside a tile, a split with no tile, and both weight layouts; bfloat16
  inputs accumulate in float32 and get gradients in bfloat16."""
  vd, teacher_vd = layouts
  rng = np.random.default_rng(7)
  n, d, dt, v = 45, 20, 36, 300
  hs, ws, ht, wt = (rng.normal(size=s) for s in ((n, d), (d, v), (n, dt), (dt, v)))
  ws, wt = ws * 2 / np.sqrt(d), wt * 2 / np.sqrt(dt)
  ws_in, wt_in = (w.T.copy() if t else w for w, t in ((ws, vd), (wt, teacher_vd)))
  where = rng.random(n) > 0.2
  cfg = dict(divergence=divergence, beta=beta)
  rounded = lambda x: np.asarray(jnp.asarray(x, dtype), np.float64)  # the inputs as rounded

  def ref(hs, ws, ht, wt):
    return reference.divergence(hs @ ws, ht @ wt, jnp.asarray(where), **cfg,
                                temperature=temperature)

  want, (want_dh, want_dw) = value_and_grad64(
      ref, *(rounded(x) for x in (hs, ws, ht, wt)), argnums=(0, 1))
  if vd:
    want_dw = want_dw.T

  def f(hs, ws):
    return fused_linear_pallas.linear_divergence(
        hs, ws, (jnp.asarray(ht, dtype), jnp.asarray(wt_in, dtype)), jnp.asarray(where), vd=vd,
        teacher_vd=teacher_vd, inv_t=1.0 / temperature, block_size=96,
        interpret=jax.default_backend() != "gpu",
        tile=(16, 32, 16), splits=6, **cfg)  # 10 vocabulary tiles: the last split has none

  x = jnp.asarray(hs, dtype), jnp.asarray(ws_in, dtype)
  got, (got_dh, got_dw) = value_and_grad(f, *x, argnums=(0, 1))
  raw = jax.jit(jax.grad(lambda *x: f(*x).sum(), argnums=(0, 1)))(*x)
  assert raw[0].dtype == raw[1].dtype == dtype
  # bfloat16: the gradient of the logits is rounded to bfloat16 before the backward matmuls.
  tol_dtype, n_red = (jnp.float32, v * d) if dtype == jnp.float32 else (jnp.bfloat16, 1)
  assert_close(got, want, n_reduced=v * d, err_msg="divergence")
  assert_close(got_dh, want_dh, tol_dtype, n_reduced=n_red if dtype != jnp.float32 else v,
               err_msg="d hidden")
  assert_close(got_dw, want_dw, tol_dtype, n_reduced=n_red if dtype != jnp.float32 else n,
               err_msg="d weight")


# Pallas interpret mode: the fast tier keeps the reverse KL, whose infinity crosses the merge
# of the splits; the forward KL (finite) is slow.
@tiered("divergence", ["forward_kl", "reverse_kl"], fast=["reverse_kl"])
def test_fused_linear_pallas_teacher_logits_without_mass(divergence):
  """Teacher logits with -inf: the reverse KL of those tokens is infinite and stays so when
  the teacher's max jumps in a later vocabulary split (the merge of the splits' KL states);
  the forward KL stays finite."""
  rng = np.random.default_rng(11)
  n, d, v = 40, 16, 300
  hs, ws = rng.normal(size=(n, d)), rng.normal(size=(d, v)) * 2 / np.sqrt(d)
  zt = 3 * rng.normal(size=(n, v))
  zt[::3, 7::9] = -np.inf
  zt[0, 290] = 200.0  # in the last split, after the first splits' KL went infinite
  valid = np.ones(n, bool)
  want = value_and_grad64(_ref(valid, divergence, 0.5, 1.0), hs @ ws, zt)[0]
  got = np.asarray(fused_linear_pallas.linear_divergence(
      jnp.asarray(hs, jnp.float32), jnp.asarray(ws, jnp.float32), (jnp.asarray(zt, jnp.float32),),
      jnp.asarray(valid), vd=False, teacher_vd=False, divergence=divergence, beta=0.5,
      inv_t=1.0, interpret=jax.default_backend() != "gpu", tile=(16, 32, 16), splits=5),
      np.float64)
  lacking = np.arange(n) % 3 == 0 if divergence == "reverse_kl" else np.zeros(n, bool)
  np.testing.assert_array_equal(np.isinf(want), lacking)
  np.testing.assert_array_equal(np.isinf(got), lacking)
  assert_close(got[~lacking], want[~lacking], n_reduced=v * d, err_msg=divergence)


# Pallas interpret mode costs seconds: its case is slow (the kernel runs in the fast tier in
# test_matches_float64_reference).
@tiered("implementation", IMPLEMENTATIONS, fast=["xla", "chunked"])
def test_nan_logit_gives_nan(device, implementation):
  """A NaN logit makes its token's divergence NaN (never 0 or a number); others are kept."""
  zs, zt = logits(12), logits(13)
  zs[4, 10] = zt[9, 999] = np.nan
  for divergence in ("forward_kl", "reverse_kl", "js"):
    got = np.asarray(jax.jit(functools.partial(
        dd, divergence=divergence, implementation=implementation, block_size=BLOCK))(
            jnp.asarray(zs, jnp.float32), jnp.asarray(zt, jnp.float32)))
    assert np.isnan(got[[4, 9]]).all(), (divergence, got[[4, 9]])
    assert np.isfinite(np.delete(got, [4, 9])).all(), divergence


# xla (6 s) and Pallas are slow: the fast tier keeps chunked here and xla in
# test_matches_float64_reference.
@tiered("implementation", IMPLEMENTATIONS, fast=["chunked"])
def test_rows_without_mass_and_js_at_the_ends(device, implementation):
  """A row of -inf logits (student's or teacher's) gives 0 and no gradient, and JS at beta 0
  and 1 is 0 with a zero gradient even where the teacher misses part of the support (the
  kernels' beta * KL(t || m) alone would be 0 * inf there); the other rows against the float64
  maths of `jaxdiv.js_divergence` / `kl_divergence` from logits."""
  zs, zt = logits(14), logits(15)
  zt[3] = -np.inf  # no teacher distribution
  zs[5] = -np.inf  # no student distribution
  zt[7, ::3] = -np.inf  # the teacher misses a third of the vocabulary
  empty = [3, 5]
  s32, t32 = jnp.asarray(zs, jnp.float32), jnp.asarray(zt, jnp.float32)
  full = np.setdiff1d(np.arange(len(zs)), empty)
  plain = _plain_divergences(zs[full], zt[full])
  for (divergence, beta), want in plain.items():
    f = functools.partial(dd, divergence=divergence, beta=beta, implementation=implementation,
                          block_size=BLOCK)
    per_token = np.asarray(jax.jit(f)(s32, t32))
    grad = np.asarray(jax.jit(jax.grad(lambda z, f=f: jnp.sum(f(z, t32))))(s32))
    # Gradients are finite wherever the value is (reverse KL is +inf on row 7).
    assert np.isfinite(grad[np.isfinite(per_token)]).all(), (divergence, beta)
    np.testing.assert_array_equal(per_token[empty], 0)
    np.testing.assert_array_equal(grad[empty], 0)
    np.testing.assert_allclose(per_token[full], np.asarray(want), rtol=2e-4, atol=2e-6,
                               err_msg=f"{divergence} {beta}")
    if divergence == "js" and beta in (0.0, 1.0):
      np.testing.assert_allclose(grad, 0, atol=1e-6)


def test_js_limits_and_bad_inputs():
  zs, zt = jnp.asarray(logits(5), jnp.float32), jnp.asarray(logits(6), jnp.float32)
  for beta in (0.0, 1.0):
    np.testing.assert_allclose(dd(zs, zt, divergence="js", beta=beta), 0.0, atol=1e-6)
  np.testing.assert_allclose(dd(zs, zs, divergence="reverse_kl"), 0.0, atol=1e-5)
  with pytest.raises(ValueError, match="divergence"):
    dd(zs, zt, divergence="kl")
  with pytest.raises(ValueError, match="temperature"):
    dd(zs, zt, temperature=0.0)
  with pytest.raises(ValueError, match="beta"):
    dd(zs, zt, divergence="js", beta=1.5)
  with pytest.raises(ValueError, match="shape"):
    dd(zs, zt[:, :-1])
  with pytest.raises(ValueError, match="either"):
    fldd(zs[:, :8], jnp.zeros((8, V)), zs[:, :8], jnp.zeros((8, V)), teacher_logits=zt)


@tiered("implementation,divergence,beta,temperature",
        [(i, *setting) for i in IMPLEMENTATIONS for setting in SETTINGS[1:3]])
def test_forward_mode_matches_float64_reference(device, implementation, divergence, beta,
                                                temperature):
  """`jax.jvp` of every implementation with `forward_mode=True` (as jaxdiv.losses calls them:
  the custom VJP wrapped by `_blockwise.gradient_jvp`) against the float64 reference's; the
  teacher's tangent is dropped (the teacher is constant)."""
  zs, zt = logits(20), logits(21)
  where = np.random.default_rng(22).random(N) > 0.2
  ts, tt = logits(23, scale=1.0), logits(24, scale=1.0)
  # jitted: eagerly, each op of the reference and of its JVP compiles on its own. The kernel's
  # JVP runs eagerly, as the plain call it must equal bit for bit.
  with jax.enable_x64(True):
    ref = _ref(where, divergence, beta, temperature)
    want, want_t = jax.jit(lambda a, t: jax.jvp(lambda a: ref(a, jnp.asarray(zt)), (a,), (t,)))(
        zs, ts)
  f = functools.partial(api.logits_divergence, valid=jnp.asarray(where),
                        divergence=divergence, beta=beta, temperature=temperature,
                        implementation=implementation, block_size=BLOCK, forward_mode=True)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  got, got_t = jax.jvp(f, (f32(zs), f32(zt)), (f32(ts), f32(tt)))
  np.testing.assert_array_equal(
      got, dd(f32(zs), f32(zt), divergence=divergence, beta=beta, temperature=temperature,
              where=jnp.asarray(where), implementation=implementation, block_size=BLOCK))
  assert_close(got, want, err_msg="divergence")
  assert_close(got_t, want_t, err_msg="tangent")
  assert np.all(np.asarray(got_t)[~where] == 0)
