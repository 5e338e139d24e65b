"""Multi-device tests on 8 CPU devices: sharded evaluation and vocabulary-parallel reductions.

`tests/conftest.py` gives the CPU platform 8 devices before JAX starts, so these tests run in
the same process as every other test (one device stays the default there). Run on fewer
devices (a conftest that does not set it), they skip.
"""

from __future__ import annotations

import inspect

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
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxdiv
from jaxdiv.evaluation import evaluate

pytestmark = pytest.mark.multidevice


def _logits(shape, seed=0, scale=3.0):
  rng = np.random.default_rng(seed)
  return (scale * rng.standard_normal(shape)).astype(np.float32)


def _probs(shape, seed=0):
  x = _logits(shape, seed)
  e = np.exp(x - x.max(-1, keepdims=True))
  return (e / e.sum(-1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------ sharded evaluation ----

@needs_8
# Fast tier: a small and a large vocabulary; renyi (a parameter passed through the shards) runs
# in the slow tier (parameters under evaluate: test_evaluate.py, one device).
@tiered("name,n", [("kl_divergence", 37), ("js_divergence", 3000), ("renyi_divergence", 37)],
        fast=[("kl_divergence", 37), ("js_divergence", 3000)])
def test_evaluate_same_bytes_for_any_device_count_and_batch(name, n):
  rows = 1333  # not a multiple of anything used below
  p, q = _logits((rows, n), 0), _logits((rows, n), 1)
  kw = {"alpha": 0.7} if name == "renyi_divergence" else {}
  red = ("mean", "sum", "std", "min", "max", "quantiles", "histogram")
  ref = evaluate(name, p, q, from_logits=True, mesh=cpu_mesh(1), batch_size=256,
                 reductions=red, **kw)
  for k, bs in [(1, 1000), (2, 300), (8, 1), (8, 5000)]:
    res = evaluate(name, p, q, from_logits=True, mesh=cpu_mesh(k), batch_size=bs,
                   reductions=red, **kw)
    assert res.timing["devices"] == k
    np.testing.assert_array_equal(res.per_row, ref.per_row, err_msg=f"{k} devices, batch {bs}")
    assert res.per_row.tobytes() == ref.per_row.tobytes()
    assert res.summary == ref.summary, (k, bs)
  # ... and equal to the plain one-device call to float32 rounding.
  direct = np.asarray(getattr(jaxdiv, name)(p, q, from_logits=True, **kw))
  np.testing.assert_allclose(ref.per_row, direct, rtol=2e-6, atol=2e-6)


@needs_8
def test_evaluate_default_mesh_uses_every_device_and_2d_mesh():
  p, q = _probs((500, 64), 2), _probs((500, 64), 3)
  res = evaluate("kl_divergence", p, q)
  assert res.timing["devices"] == N_DEVICES
  mesh2d = Mesh(np.array(jax.devices("cpu")).reshape(2, 4), ("x", "y"))
  res2 = evaluate("kl_divergence", p, q, mesh=mesh2d, batch_size=64)
  assert res2.per_row.tobytes() == res.per_row.tobytes()
  assert res2.summary == res.summary


@needs_8
def test_evaluate_memmap_iterator_and_out_file_on_8_devices(tmp_path):
  p, q = _logits((2049, 40), 4), _logits((2049, 40), 5)
  np.save(tmp_path / "p.npy", p)
  np.save(tmp_path / "q.npy", q)
  pm = np.load(tmp_path / "p.npy", mmap_mode="r")
  qm = np.load(tmp_path / "q.npy", mmap_mode="r")
  ref = evaluate("js_distance", p, q, from_logits=True, mesh=cpu_mesh(1))
  res = evaluate("js_distance", pm, qm, from_logits=True, out=tmp_path / "o.npy",
                 batch_size=512)
  batches = ((p[i:i + 300], q[i:i + 300]) for i in range(0, len(p), 300))
  res_it = evaluate("js_distance", batches, from_logits=True, batch_size=700)
  assert np.load(tmp_path / "o.npy").tobytes() == ref.per_row.tobytes()
  assert res_it.per_row.tobytes() == ref.per_row.tobytes()
  assert res.summary == ref.summary == res_it.summary


# ---------------------------------------------------------- vocabulary-parallel reductions ----

_SHANNON = ["entropy", "cross_entropy", "kl_divergence", "jeffreys_divergence",
            "js_divergence", "js_distance"]


def _vocab_parallel(fn, mesh, n_inputs, batch_axis=None, **kw):
  """`fn` with the last axis split over the mesh axis "vocab" (and the batch over `batch_axis`)."""
  spec = P(batch_axis, "vocab")

  def local(*xs):
    return fn(*xs, axis=-1, axis_name="vocab", **kw)

  return shard_map(local, mesh=mesh, in_specs=(spec,) * n_inputs, out_specs=P(batch_axis))


@needs_8
@tiered("name,from_logits", [(n, f) for n in _SHANNON for f in (False, True)])
def test_vocab_parallel_values_and_grads_equal_one_device(name, from_logits):
  fn = getattr(jaxdiv, name)
  n_inputs = 1 if name == "entropy" else 2
  make = _logits if from_logits else _probs
  xs = [jnp.asarray(make((6, 8 * 13), seed)) for seed in range(n_inputs)]
  if not from_logits:  # zeros in the support exercise the 0 log 0 conventions across shards
    xs = [x.at[:, ::7].set(0.0) / x.at[:, ::7].set(0.0).sum(-1, keepdims=True) for x in xs]
  mesh = cpu_mesh(N_DEVICES, "vocab")
  sharded = jax.jit(_vocab_parallel(fn, mesh, n_inputs, from_logits=from_logits))
  one = jax.jit(lambda *a: fn(*a, axis=-1, from_logits=from_logits))
  np.testing.assert_allclose(sharded(*xs), one(*xs), rtol=2e-6, atol=2e-6)

  w = jnp.linspace(0.5, 1.5, xs[0].shape[0])  # a non-uniform cotangent

  def loss(f):
    return lambda *a: jnp.sum(w * f(*a))

  argnums = tuple(range(n_inputs))
  g_sharded = jax.jit(jax.grad(loss(sharded), argnums))(*xs)
  g_one = jax.jit(jax.grad(loss(one), argnums))(*xs)
  for gs, go in zip(g_sharded, g_one):
    assert np.all(np.isfinite(gs))
    np.testing.assert_allclose(gs, go, rtol=1e-5, atol=1e-6)


@needs_8
# Fast tier: js (the mixture's pieces summed over shards); each function also runs on the 1-D
# vocabulary mesh above.
@tiered("name", ["kl_divergence", "js_divergence", "cross_entropy"], fast=["js_divergence"])
def test_vocab_parallel_on_2d_mesh_with_mask(name):
  """Batch over "data" (2) and vocabulary over "vocab" (4), with a mask over the support."""
  fn = getattr(jaxdiv, name)
  mesh = Mesh(np.array(jax.devices("cpu")).reshape(2, 4), ("data", "vocab"))
  p, q = jnp.asarray(_logits((8, 4 * 9), 6)), jnp.asarray(_logits((8, 4 * 9), 7))
  where = jnp.asarray(np.random.default_rng(8).random((8, 36)) > 0.3)
  where = where.at[3].set(False)  # an all-masked row gives 0
  spec = P("data", "vocab")
  sharded = jax.jit(shard_map(
      lambda a, b, m: fn(a, b, axis=-1, where=m, from_logits=True, axis_name="vocab"),
      mesh=mesh, in_specs=(spec, spec, spec), out_specs=P("data")))
  one = jax.jit(lambda a, b, m: fn(a, b, axis=-1, where=m, from_logits=True))
  np.testing.assert_allclose(sharded(p, q, where), one(p, q, where), rtol=2e-6, atol=2e-6)
  assert float(sharded(p, q, where)[3]) == 0.0
  g_s = jax.grad(lambda a, b: sharded(a, b, where).sum(), (0, 1))(p, q)
  g_o = jax.grad(lambda a, b: one(a, b, where).sum(), (0, 1))(p, q)
  for a, b in zip(g_s, g_o):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# Cross-entropy losses (jaxdiv.losses) and the fused linear cross-entropy take `axis_name` from
# their owners; these tests run as soon as the parameter exists and are skipped until then.
_LOSSES = ["softmax_cross_entropy", "safe_softmax_cross_entropy", "kl_divergence",
           "kl_divergence_with_log_targets"]


def _losses():
  try:
    from jaxdiv import losses
  except ImportError:
    return None
  return losses


@needs_8
@pytest.mark.parametrize("name", _LOSSES)
def test_vocab_parallel_losses(name):
  losses = _losses()
  fn = getattr(losses, name, None) if losses is not None else None
  if fn is None or "axis_name" not in inspect.signature(fn).parameters:
    pytest.skip(f"jaxdiv.losses.{name} has no axis_name= yet")
  mesh = cpu_mesh(N_DEVICES, "vocab")
  a = jnp.asarray(_logits((5, 8 * 7), 9))
  if name == "kl_divergence_with_log_targets":
    b = jax.nn.log_softmax(jnp.asarray(_logits((5, 56), 10)))
  elif name == "kl_divergence":  # optax order: log_predictions, targets
    a = jax.nn.log_softmax(a)
    b = jnp.asarray(_probs((5, 56), 10))
  else:
    b = jnp.asarray(_probs((5, 56), 10))
  spec = P(None, "vocab")
  sharded = jax.jit(shard_map(lambda x, y: fn(x, y, axis_name="vocab"), mesh=mesh,
                              in_specs=(spec, spec), out_specs=P()))
  np.testing.assert_allclose(sharded(a, b), fn(a, b), rtol=2e-6, atol=2e-6)
  g_s = jax.grad(lambda x, y: sharded(x, y).sum(), (0, 1))(a, b)
  g_o = jax.grad(lambda x, y: fn(x, y).sum(), (0, 1))(a, b)
  for u, v in zip(g_s, g_o):
    np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


@needs_8
def test_vocab_parallel_integer_label_cross_entropy():
  losses = _losses()
  fn = getattr(losses, "softmax_cross_entropy_with_integer_labels", None) if losses else None
  if fn is None or "axis_name" not in inspect.signature(fn).parameters:
    pytest.skip("softmax_cross_entropy_with_integer_labels has no axis_name= yet")
  mesh = cpu_mesh(N_DEVICES, "vocab")
  logits = jnp.asarray(_logits((6, 8 * 5), 11))
  labels = jnp.asarray(np.random.default_rng(12).integers(0, 40, size=6))
  sharded = jax.jit(shard_map(lambda x, y: fn(x, y, axis_name="vocab"), mesh=mesh,
                              in_specs=(P(None, "vocab"), P()), out_specs=P()))
  np.testing.assert_allclose(sharded(logits, labels), fn(logits, labels), rtol=2e-6, atol=2e-6)
  g_s = jax.grad(lambda x: sharded(x, labels).sum())(logits)
  g_o = jax.grad(lambda x: fn(x, labels).sum())(logits)
  np.testing.assert_allclose(g_s, g_o, rtol=1e-5, atol=1e-6)


# ------------------------------------------ vocabulary-parallel fused linear cross-entropy ----

_FLCE_N, _FLCE_D, _FLCE_V = 12, 16, N_DEVICES * 37  # 37 columns a shard: not a multiple of 16
_FLCE_OPTIONS = dict(ignore_index=-1, label_smoothing=0.1, z_loss=1e-3)


def _flce_inputs(seed, layout, n=_FLCE_N, v=_FLCE_V, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  h = rng.normal(size=(n, _FLCE_D))
  w = rng.normal(size=(_FLCE_D, v)) * 3 / np.sqrt(_FLCE_D)
  y = rng.integers(0, v, n)
  y[::5] = -1  # ignored tokens
  where = rng.random(n) > 0.2
  w = w.T if layout == "vd" else w
  return (jnp.asarray(h, dtype), jnp.asarray(w, dtype), jnp.asarray(y, jnp.int32),
          jnp.asarray(where))


def _flce_sharded(mesh, layout, check=True, data=None, **kw):
  """The fused loss with the weight's vocabulary split over "vocab" (tokens over `data`)."""
  w_spec = P("vocab", None) if layout == "vd" else P(None, "vocab")

  def local(h, w, y, m):
    return jaxdiv.losses.fused_linear_cross_entropy(h, w, y, where=m, weight_layout=layout,
                                                    axis_name="vocab", **kw)

  return shard_map(local, mesh=mesh, in_specs=(P(data, None), w_spec, P(data), P(data)),
                   out_specs=P(data), **({} if check else {CHECK_FLAG: False}))


def _flce_compare(sharded, one, args, rtol, atol):
  """Loss and the gradients of hidden and weight (non-uniform cotangent), sharded vs one."""
  c = jnp.linspace(0.5, 1.5, args[0].shape[0])
  results = []
  for f in (sharded, one):
    vg = jax.jit(jax.value_and_grad(
        lambda h, w, f=f: jnp.sum(c * f(h, w, *args[2:]).astype(jnp.float32)), (0, 1)))
    results.append((jax.jit(f)(*args), *vg(*args[:2])[1]))
  for name, got, want in zip(("loss", "d hidden", "d weight"), *results):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert np.all(np.isfinite(got)), name
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * np.abs(want).max(),
                               err_msg=name)
  return results


@needs_8
@tiered("implementation,layout,check",
        [(i, lay, c) for i in ("chunked", "xla") for lay in ("dv", "vd") for c in (True, False)],
        ids=lambda v: {True: "check_vma", False: "no_check"}.get(v, v))
def test_vocab_parallel_fused_linear_cross_entropy(implementation, layout, check):
  """8 vocabulary shards of 37 columns (blocks of 16) equal the one-device loss on the full
  weight, with where, ignore_index, label smoothing (global V) and z-loss; gradients of hidden
  (summed over shards) and weight, with and without shard_map's replication checks."""
  args = _flce_inputs(0, layout)
  kw = dict(implementation=implementation, block_size=16, **_FLCE_OPTIONS)
  sharded = _flce_sharded(cpu_mesh(N_DEVICES, "vocab"), layout, check, **kw)
  one = lambda h, w, y, m: jaxdiv.losses.fused_linear_cross_entropy(
      h, w, y, where=m, weight_layout=layout, **kw)
  (loss, dh, _), _ = _flce_compare(sharded, one, args, rtol=2e-6, atol=2e-6)
  ignored = ~np.asarray(args[3]) | (np.asarray(args[2]) == -1)
  assert np.all(np.asarray(loss)[ignored] == 0) and np.all(np.asarray(dh)[ignored] == 0)
  assert np.all(np.asarray(loss)[~ignored] > 0)


@needs_8
def test_vocab_parallel_fused_linear_cross_entropy_pallas_interpret():
  """Pallas (interpret mode): the kernels give each shard's statistics and block gradients."""
  layout = "vd"
  mesh = cpu_mesh(N_DEVICES, "vocab")
  args = _flce_inputs(1, layout, n=6, v=N_DEVICES * 20)
  kw = dict(implementation="pallas", block_size=16, **_FLCE_OPTIONS)
  one = lambda h, w, y, m: jaxdiv.losses.fused_linear_cross_entropy(
      h, w, y, where=m, weight_layout=layout, **kw)
  _flce_compare(_flce_sharded(mesh, layout, check=False, **kw), one, args, rtol=2e-6,
                atol=2e-6)
  # jax's Pallas interpreter cannot run under the replication checks: a clear error.
  with pytest.raises(ValueError, match="check_vma=False"):
    _flce_sharded(mesh, layout, **kw)(*args)


@needs_8
# Fast tier: chunked; each implementation runs sharded in float32 above.
@tiered("implementation", ["chunked", "xla"], fast=["chunked"])
def test_vocab_parallel_fused_linear_cross_entropy_bfloat16(implementation):
  """bf16 activations and weight: each shard's d hidden is rounded to bf16 before the sum over
  shards, hence a few bf16 ulps of difference from one device."""
  mesh = cpu_mesh(N_DEVICES, "vocab")
  kw = dict(implementation=implementation, block_size=16, **_FLCE_OPTIONS)
  for layout in ("dv", "vd"):
    args = _flce_inputs(2, layout, dtype=jnp.bfloat16)
    one = lambda h, w, y, m, layout=layout: jaxdiv.losses.fused_linear_cross_entropy(
        h, w, y, where=m, weight_layout=layout, **kw)
    sharded = _flce_sharded(mesh, layout, **kw)
    (loss, _, _), _ = _flce_compare(sharded, one, args, rtol=8e-3, atol=8e-3)
    assert loss.dtype == jnp.bfloat16


@needs_8
# Fast tier: chunked (also data parallelism alone); each implementation runs sharded above.
@tiered("implementation", ["chunked", "xla"], fast=["chunked"])
def test_vocab_parallel_fused_linear_cross_entropy_2d_mesh(implementation):
  """Tokens over "data" (2) and vocabulary over "vocab" (4): d weight sums over the data axis,
  d hidden over the vocabulary axis. Also data parallelism alone (no axis_name; "chunked"
  only: the "xla" path's cross-entropy kernel loops with an untyped carry under check_vma)."""
  mesh = Mesh(np.array(jax.devices("cpu")).reshape(2, 4), ("data", "vocab"))
  args = _flce_inputs(3, "dv", n=2 * 7, v=4 * 37)
  kw = dict(implementation=implementation, block_size=16, **_FLCE_OPTIONS)
  one = lambda h, w, y, m: jaxdiv.losses.fused_linear_cross_entropy(h, w, y, where=m, **kw)
  _flce_compare(_flce_sharded(mesh, "dv", data="data", **kw), one, args, rtol=2e-6, atol=2e-6)
  if implementation == "chunked":
    data_only = shard_map(one, mesh=cpu_mesh(2), out_specs=P("data"),
                          in_specs=(P("data"), P(), P("data"), P("data")))
    _flce_compare(data_only, one, args, rtol=2e-6, atol=2e-6)


@pytest.mark.slow  # about 60 s on 2 cores: three functions, two shardings, value and gradient
@needs_8
def test_row_blocks_inside_shard_map_and_on_explicit_shardings():
  """The row blocks of the guarded paths (`_fallback.row_blocks`: the fallback of a fast path
  over more than 2**19 entries, the guarded forward over more than 2**18) inside `shard_map`
  (their loop's carry has the inputs' varying axes) and on arrays whose type carries an
  explicit sharding (computed whole there). 260 x 4096 entries a device; before this both
  raised (a carry type mismatch under shard_map, a sharding mismatch on explicit arrays)."""
  from jax.sharding import AxisType
  from jax.sharding import NamedSharding

  a = _logits((2 * 260, 4096), seed=11)
  b = a + _logits(a.shape, seed=12, scale=0.5)
  fns = {"kl": lambda x, y: jaxdiv.kl_divergence(x, y, from_logits=True),
         "js_distance": lambda x, y: jaxdiv.js_distance(x, y, from_logits=True),
         "renyi[0.5]": lambda x, y: jaxdiv.renyi_divergence(x, y, 0.5, from_logits=True)}
  devices = np.array(jax.devices("cpu")[:2])
  for name, f in fns.items():
    want = jax.jit(f)(a, b)
    want_grad = jax.jit(jax.grad(lambda x, f=f: jnp.sum(f(x, b))))(a)
    sm = shard_map(f, mesh=cpu_mesh(2), in_specs=(P("data"), P("data")), out_specs=P("data"))
    explicit = Mesh(devices, ("data",), axis_types=(AxisType.Explicit,))
    ea, eb = (jax.device_put(x, NamedSharding(explicit, P("data"))) for x in (a, b))
    for how, g, x, y in (("shard_map", jax.jit(sm), a, b), ("explicit", jax.jit(f), ea, eb)):
      np.testing.assert_allclose(g(x, y), want, rtol=1e-6, atol=1e-7, err_msg=f"{name} {how}")
      grad = jax.jit(jax.grad(lambda x, g=g, y=y: jnp.sum(g(x, y))))(x)
      # atol 1e-7: a shard's program fuses differently from the whole batch's (since the
      # lost-row rule, a596815, the JS distance's gradients differ by up to 6e-8), well inside
      # float32's own error here (2.5e-7 at most against float64, sharded or not).
      np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7,
                                 err_msg=f"{name} {how}")


@pytest.mark.slow  # the fast tier runs no case of this test; it costs 29 s
@needs_8
def test_one_pass_probability_forms_on_sharded_arrays(one_pass):
  """The probability forms whose fast path sums in one pass (`_fallback.row_reduce`: rows of
  1024 float32, several chunks) on arrays sharded over the rows or over the distribution axis
  of an Explicit mesh (where the chunks' reshape has no sharding to infer, so the ordinary
  reductions run) and inside shard_map: the one-device values and gradients. Before, the
  Explicit cases raised a ShardingTypeError."""
  from jax.sharding import AxisType
  from jax.sharding import NamedSharding

  rng = np.random.default_rng(13)
  p, q = (jnp.asarray(rng.dirichlet(np.full(1024, 2.0), 4).astype(np.float32)) for _ in "pq")
  fns = {"total_variation": lambda x, y: jaxdiv.total_variation_distance(x, y),
         "chi_squared": lambda x, y: jaxdiv.chi_squared_divergence(x, y),
         "renyi[2]": lambda x, y: jaxdiv.renyi_divergence(x, y, 2.0),
         "tsallis_entropy[3]": lambda x, y: jaxdiv.tsallis_entropy(x, 3.0)}
  explicit = Mesh(np.array(jax.devices("cpu")[:2]), ("data",), axis_types=(AxisType.Explicit,))
  for name, f in fns.items():
    want = jax.jit(f)(p, q)
    want_grad = jax.jit(jax.grad(lambda x, f=f: jnp.sum(f(x, q))))(p)
    sm = shard_map(f, mesh=cpu_mesh(2), in_specs=(P("data"), P("data")), out_specs=P("data"))
    runs = [("shard_map", jax.jit(sm), p, q)]
    for spec in (P("data"), P(None, "data")):
      x, y = (jax.device_put(a, NamedSharding(explicit, spec)) for a in (p, q))
      runs += [(f"explicit {spec}", jax.jit(f), x, y), (f"explicit {spec} eager", f, x, y)]
    for how, g, x, y in runs:
      np.testing.assert_allclose(g(x, y), want, rtol=1e-6, atol=1e-7, err_msg=f"{name} {how}")
      grad = jax.jit(jax.grad(lambda x, g=g, y=y: jnp.sum(g(x, y))))(x)
      # gradients of order 1 (chi-squared: 2 (p - q) / q); entries near 0 by cancellation
      np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-6, err_msg=f"{name} {how}")


@needs_8
@pytest.mark.parametrize("check", [True, False], ids=["check_vma", "no_check"])
def test_forward_grad_fused_linear_cross_entropy_data_parallel(check):
  """implementation="forward_grad" (a reduced loss, gradients formed in the forward) with the
  tokens over 2 devices: the per-device sums under shard_map (with and without the replication
  checks, whose types its custom VJP has to carry), and jit on token-sharded arrays, equal
  the one-device "chunked" loss in value and in the gradients of hidden and weight."""
  args = _flce_inputs(4, "dv", n=2 * 9)
  kw = dict(block_size=4, reduction="sum", **_FLCE_OPTIONS)
  fg = lambda h, w, y, m: jaxdiv.losses.fused_linear_cross_entropy(
      h, w, y, where=m, implementation="forward_grad", **kw)
  one = lambda h, w, y, m: jaxdiv.losses.fused_linear_cross_entropy(
      h, w, y, where=m, implementation="chunked", **kw)
  local = shard_map(lambda *a: fg(*a)[None], mesh=cpu_mesh(2), out_specs=P("data"),
                    in_specs=(P("data"), P(), P("data"), P("data")),
                    **({} if check else {CHECK_FLAG: False}))
  mesh = cpu_mesh(2)
  spec = lambda x: NamedSharding(mesh, P("data") if x.shape[0] == args[0].shape[0] else P())
  placed = [jax.device_put(x, spec(x)) for x in args]
  want, want_grads = jax.jit(jax.value_and_grad(lambda h, w: one(h, w, *args[2:]), (0, 1)))(
      *args[:2])
  for how, f, xs in (("shard_map", lambda *a: jnp.sum(local(*a)), args), ("jit", fg, placed)):
    got, grads = jax.jit(jax.value_and_grad(lambda h, w, f=f, xs=xs: f(h, w, *xs[2:]), (0, 1)))(
        *xs[:2])
    np.testing.assert_allclose(float(got), float(want), rtol=2e-6, err_msg=how)
    for name, g, w in zip(("d hidden", "d weight"), grads, want_grads):
      g, w = np.asarray(g), np.asarray(w)
      np.testing.assert_allclose(g, w, rtol=2e-6, atol=2e-6 * np.abs(w).max(),
                                 err_msg=f"{how} {name}")


@pytest.mark.slow  # the fast tier runs no case of this test; it costs 17 s
@needs_8
def test_kernels_on_explicitly_sharded_arrays():
  """Tokens on a mesh with Explicit axes (`jax.make_mesh`'s default): every kernel's public
  function and the losses that call them give the unsharded values and gradients, and the
  per-token results keep the tokens' sharding. Before, the blockwise paths raised
  `ShardingTypeError` (a gather of replicated weight rows by sharded labels, a sharded block
  written into a replicated buffer)."""
  from jax.sharding import AxisType

  mesh = Mesh(np.array(jax.devices("cpu")[:2]), ("data",), axis_types=(AxisType.Explicit,))
  rng = np.random.default_rng(5)
  n, d, v, k = 16, 8, 40, 5
  h, h2 = (rng.normal(size=(n, d)).astype(np.float32) for _ in range(2))
  w, w2 = ((rng.normal(size=(d, v)) / 3).astype(np.float32) for _ in range(2))
  y = rng.integers(0, v, n).astype(np.int32)
  a, b = (rng.normal(size=(n, v)).astype(np.float32) for _ in range(2))
  m = rng.random(n) > 0.2
  ti = np.argsort(-b, -1)[:, :k].astype(np.int32)
  tl = np.take_along_axis(np.asarray(jax.nn.log_softmax(b)), ti, -1)
  K, L = jaxdiv.kernels, jaxdiv.losses
  # (name, function of (x, w) with x the tokens' hidden states or logits, the token inputs)
  cases = [
      ("fused CE", lambda x, w, y, m, *_: K.fused_linear_cross_entropy(x, w, y, where=m), h),
      ("fused CE mean", lambda x, w, y, m, *_: K.fused_linear_cross_entropy(
          x, w, y, where=m, reduction="mean"), h),
      ("fused CE forward_grad", lambda x, w, y, m, *_: K.fused_linear_cross_entropy(
          x, w, y, reduction="sum", implementation="forward_grad"), h),
      ("token log probs", lambda x, w, y, *_: K.fused_linear_token_log_probs(x, w, y), h),
      ("fused distillation", lambda x, w, y, m, h2, *_: K.fused_linear_distillation_divergence(
          x, w, h2, w2), h),
      ("fused top-k", lambda x, w, y, m, h2, ti, tl, *_: K.fused_linear_topk_distillation_loss(
          x, w, ti, tl), h),
      ("CE kernel", lambda x, w, y, m, *_: K.cross_entropy_with_integer_labels(x, y, where=m), a),
      ("distillation kernel", lambda x, w, y, m, h2, ti, tl, b: K.distillation_divergence(x, b),
       a),
      ("top-k kernel", lambda x, w, y, m, h2, ti, tl, *_: K.topk_distillation_loss(x, ti, tl), a),
      ("losses CE", lambda x, w, y, *_: L.softmax_cross_entropy_with_integer_labels(
          x, y, label_smoothing=0.1), a),
      ("losses distillation", lambda x, w, y, m, h2, ti, tl, b: L.distillation_loss(
          x, b, divergence="js"), a),
  ]
  tokens = (y, m, h2, ti, tl, b)
  put = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
  sharded = tuple(map(put, tokens))
  ws = jax.device_put(w, NamedSharding(mesh, P()))
  for name, f, x in cases:
    def value_and_grad(x, w, t, f=f):
      g = lambda x, w: sum(jnp.sum(o) for o in jax.tree.leaves(f(x, w, *t)))
      return f(x, w, *t), jax.grad(g, (0, 1))(x, w)

    want = jax.jit(value_and_grad)(x, w, tokens)
    got = jax.jit(value_and_grad)(put(x), ws, sharded)
    for g, wt in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(np.asarray(g), np.asarray(wt), rtol=1e-5, atol=1e-6,
                                 err_msg=name)
    for out in jax.tree.leaves(got[0]):
      if out.ndim:  # per-token: sharded as the tokens are
        assert out.sharding.spec == P("data"), (name, out.sharding)
  # A hyperparameter given as a concrete jax scalar stays concrete (the kernels need it static).
  got = K.fused_linear_cross_entropy(put(h), ws, sharded[0], label_smoothing=jnp.float32(0.1))
  want = K.fused_linear_cross_entropy(h, w, y, label_smoothing=0.1)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)
  # Vocabulary parallelism on a 2 x 2 mesh whose "data" axis stays Explicit: shard_map over
  # "model" only (the Manual axis is left as it is).
  mesh2 = Mesh(np.array(jax.devices("cpu")[:4]).reshape(2, 2), ("data", "model"),
               axis_types=(AxisType.Explicit,) * 2)
  put2 = lambda x, spec: jax.device_put(x, NamedSharding(mesh2, spec))
  vocab = shard_map(lambda a, b, c: K.fused_linear_cross_entropy(a, b, c, axis_name="model"),
                    mesh=mesh2, in_specs=(P(), P(None, "model"), P()), out_specs=P(),
                    axis_names={"model"})
  got = jax.jit(vocab)(put2(h, P("data")), put2(w, P(None, "model")), put2(y, P("data")))
  np.testing.assert_allclose(np.asarray(got), np.asarray(K.fused_linear_cross_entropy(h, w, y)),
                             rtol=1e-5, atol=1e-6)
