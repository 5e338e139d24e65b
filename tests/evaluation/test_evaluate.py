"""jaxdiv.evaluate on one device: values, reductions, inputs, outputs, NaN policies, errors."""

from __future__ import annotations

import math
import os
import sys
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import tiered

import jaxdiv
from jaxdiv._json import jsonable
from jaxdiv.evaluation import DIVERGENCES
from jaxdiv.evaluation import AllNaNError
from jaxdiv.evaluation import InputError
from jaxdiv.evaluation import NonFiniteInputError
from jaxdiv.evaluation import NotProbabilitiesError
from jaxdiv.evaluation import _io
from jaxdiv.evaluation import _reduce
from jaxdiv.evaluation import _sink
from jaxdiv.evaluation import evaluate
from jaxdiv.evaluation import open_array

ALL = ("mean", "sum", "std", "min", "max", "quantiles", "histogram")
QS = (0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 1.0)


def _logits(shape, seed=0, scale=2.0):
  return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _probs(shape, seed=0):
  x = np.exp(_logits(shape, seed))
  return (x / x.sum(-1, keepdims=True)).astype(np.float32)


def _params(spec):
  return {"alpha": 0.7} if "alpha" in spec.required else {}


# Fast tier: one registry entry per kind of entry (one or two inputs, a required alpha or none,
# distributions or Bernoulli parameters, no parameter at all); the others in the slow tier.
@tiered("name", sorted(DIVERGENCES),
        fast=["entropy", "kl_divergence", "renyi_entropy", "alpha_divergence", "binary_entropy",
              "binary_cross_entropy", "chi_squared_divergence"])
def test_every_core_divergence_matches_the_direct_call(name):
  spec = DIVERGENCES[name]
  binary = name.startswith("binary")
  p = _probs((301, 9), 0)
  q = _probs((301, 9), 1)
  if binary:  # Bernoulli parameters, summed over the last axis
    p, q = np.clip(p * 3, 0.01, 0.99), np.clip(q * 3, 0.01, 0.99)
  args = (p,) if spec.n_inputs == 1 else (p, q)
  kw = _params(spec)
  res = evaluate(name, *args, batch_size=64, **kw)
  direct = np.asarray(getattr(jaxdiv, name)(*args, axis=-1, **kw))
  assert res.per_row.shape == (301,)
  np.testing.assert_allclose(res.per_row, direct, rtol=3e-6, atol=3e-6)
  assert res.summary["divergence"] == name


def test_reductions_equal_numpy_exactly():
  p, q = _logits((5000, 17), 2), _logits((5000, 17), 3)
  res = evaluate("kl_divergence", p, q, from_logits=True, reductions=ALL, quantiles=QS,
                 bins=13, batch_size=700)
  v = res.per_row.astype(np.float64)
  s = res.summary
  np.testing.assert_allclose(s["mean"], v.mean(), rtol=1e-13)
  np.testing.assert_allclose(s["sum"], v.sum(), rtol=1e-13)
  np.testing.assert_allclose(s["std"], v.std(), rtol=1e-10)
  assert s["min"] == v.min() and s["max"] == v.max()
  np.testing.assert_array_equal(list(s["quantiles"].values()), np.quantile(v, QS))
  counts, edges = np.histogram(v, bins=13)
  np.testing.assert_array_equal(s["histogram"]["counts"], counts)
  np.testing.assert_allclose(s["histogram"]["edges"], edges)
  assert s["rows"] == 5000 and s["skipped_rows"] == 0 and s["nan_results"] == 0


def test_same_bytes_for_any_batch_size():
  p, q = _probs((3001, 50), 4), _probs((3001, 50), 5)
  ref = evaluate("js_divergence", p, q, batch_size=3001, reductions=ALL)
  for bs in (1, 255, 256, 1000, 10**6):
    res = evaluate("js_divergence", p, q, batch_size=bs, reductions=ALL)
    assert res.per_row.tobytes() == ref.per_row.tobytes(), bs
    assert res.summary == ref.summary, bs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(3))
def test_order_statistics_exact(dtype, seed):
  rng = np.random.default_rng(seed)
  v = np.concatenate([rng.standard_normal(2000) * 10.0 ** rng.integers(-5, 5, 2000),
                      [0.0, -0.0, np.inf, -np.inf, 1e-40, -1e-40], np.full(50, 3.25)])
  v = rng.permutation(v).astype(dtype)
  chunks = lambda: (v[i:i + 333] for i in range(0, v.size, 333))
  bits = 64 if dtype == np.float64 else 32
  ranks = [0, 1, 7, 1000, v.size - 2, v.size - 1]
  got = _reduce.order_statistics(chunks, ranks, bits)  # radix select
  in_memory = _reduce.order_statistics(chunks, ranks, bits, v.size)  # np.partition
  srt = np.sort(v)
  for r in ranks:
    assert got[r] == float(srt[r]), r
    assert in_memory[r] == float(srt[r]), r
  # -0.0 is folded into +0.0 on either path
  at = int(np.sum(v < 0))
  for stats in (_reduce.order_statistics(chunks, [at, at + 1], bits),
                _reduce.order_statistics(chunks, [at, at + 1], bits, v.size)):
    assert [np.signbit(stats[at]), np.signbit(stats[at + 1])] == [0, 0], stats
  got_q = _reduce.quantiles(chunks, v.size, QS, bits)
  assert got_q[0.0] == -np.inf and got_q[1.0] == np.inf
  finite = v[np.isfinite(v)]
  chunks_f = lambda: (finite[i:i + 333] for i in range(0, finite.size, 333))
  np.testing.assert_array_equal(list(_reduce.quantiles(chunks_f, finite.size, QS, bits).values()),
                                np.quantile(finite.astype(np.float64), QS))


def test_histogram_equals_numpy_and_never_fails_a_run():
  rng = np.random.default_rng(7)
  for v, bins in [(rng.normal(size=3000), 13), (np.round(rng.normal(size=999), 1), 7),
                  (np.full(50, 0.25), 4), (rng.gamma(0.3, size=4000) * 1e-30, 29)]:
    chunks = lambda v=v: iter(np.array_split(v, 3))
    got = _reduce.histogram(chunks, float(v.min()), float(v.max()), bins)
    counts, edges = np.histogram(v, bins)
    assert got["counts"] == counts.tolist() and got["edges"] == edges.tolist()
  # Ranges NumPy cannot split into equal bins ("Too many bins for data range"), which failed a
  # run at its summary after its last batch: results on both sides of +-9e307 (float64), one
  # constant beyond 2**52 (chi-squared of 1e30 in every row, float32), a range two floats wide;
  # and a subnormal range, where NumPy's equal-bin arithmetic strays from its own edges. The
  # counts are those of the edges reported, every finite value counted.
  tiny = 5e-324
  cases = [(np.array([-1.5e308, -1e300, 0.0, 1e307, 1.5e308, np.inf]), 4),
           (np.full(7, np.float32(1e30), np.float64), 20), (np.full(5, 1e16), 3),
           (np.array([1.0, np.nextafter(np.nextafter(1.0, 2), 2), 1.0]), 20),
           (np.arange(30) * tiny, 20)]
  for v, bins in cases:
    finite = v[np.isfinite(v)]
    got = _reduce.histogram(lambda v=v: iter(np.array_split(v, 2)), float(finite.min()),
                            float(finite.max()), bins)
    edges = np.array(got["edges"])
    assert len(edges) == bins + 1 and np.all(np.diff(edges) >= 0), edges
    assert edges[0] == finite.min() and edges[-1] == finite.max()
    assert got["counts"] == np.histogram(finite, edges)[0].tolist(), v
    assert sum(got["counts"]) == finite.size and got["pos_inf"] == np.sum(v == np.inf)
  got = _reduce.histogram(lambda: iter([cases[0][0]]), -1.5e308, 1.5e308, 4)
  assert got["edges"] == [-1.5e308, -7.5e307, 0.0, 7.5e307, 1.5e308]
  assert got["counts"] == [1, 1, 2, 1]


def test_moments_do_not_depend_on_feeding():
  v = np.random.default_rng(6).standard_normal(200_003).astype(np.float32) ** 3
  a, b = _reduce.Moments(), _reduce.Moments()
  a.add(v)
  i = 0
  for k in [1, 70_000, 3, 65_536, 64_463, 1]:
    b.add(v[i:i + k])
    i += k
  a.finish(), b.finish()
  assert (a.total, a.mean, a.std, a.min, a.max) == (b.total, b.mean, b.std, b.min, b.max)
  np.testing.assert_allclose(a.mean, v.astype(np.float64).mean(), rtol=1e-12)


# ---------------------------------------------------------------------------- inputs ----

def test_memmap_inputs_and_out_file(tmp_path):
  p, q = _logits((2000, 33), 7), _logits((2000, 33), 8)
  np.save(tmp_path / "p.npy", p)
  np.save(tmp_path / "q.npy", q)
  ref = evaluate("kl_divergence", p, q, from_logits=True, reductions=ALL)
  pm = np.load(tmp_path / "p.npy", mmap_mode="r")
  qm = np.load(tmp_path / "q.npy", mmap_mode="r")
  res = evaluate("kl_divergence", pm, qm, from_logits=True, reductions=ALL,
                 out=tmp_path / "out.npy", batch_size=300)
  assert isinstance(res.per_row, np.memmap)
  np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), ref.per_row)
  assert res.summary == ref.summary
  assert sorted(os.listdir(tmp_path)) == ["out.npy", "p.npy", "q.npy"]  # no temp files left


def test_out_array_and_out_false():
  p, q = _probs((999, 8), 9), _probs((999, 8), 10)
  ref = evaluate("hellinger_distance", p, q, reductions=ALL)
  buf = np.zeros(999, np.float32)
  res = evaluate("hellinger_distance", p, q, out=buf, reductions=ALL)
  assert res.per_row is buf and buf.tobytes() == ref.per_row.tobytes()
  res = evaluate("hellinger_distance", p, q, out=False, reductions=ALL)
  assert res.per_row is None and res.summary == ref.summary


def test_out_false_spools_only_for_quantiles_and_histogram(monkeypatch):
  """Results kept nowhere are held only when the summary reads them back: in memory, or in a
  temporary file above SPOOL_IN_MEMORY."""
  p, q = _probs((999, 8), 9), _probs((999, 8), 10)
  ref = evaluate("hellinger_distance", p, q, reductions=ALL)
  spools = []
  real = _io.AtomicNpyWriter

  def counting(*args, **kwargs):
    spools.append(args[0])
    return real(*args, **kwargs)

  monkeypatch.setattr(_io, "AtomicNpyWriter", counting)
  moments = ("mean", "sum", "std", "min", "max")
  res = evaluate("hellinger_distance", p, q, out=False, reductions=moments)
  assert res.per_row is None and spools == []
  assert res.summary == {k: v for k, v in ref.summary.items()
                         if k not in ("quantiles", "histogram")}
  for needs in ("quantiles", "histogram"):
    # 999 results are held in memory; above SPOOL_IN_MEMORY bytes they go to a file.
    res = evaluate("hellinger_distance", p, q, out=False, reductions=(needs,))
    assert res.per_row is None and res.summary[needs] == ref.summary[needs] and spools == []
    with monkeypatch.context() as m:
      m.setattr(_sink, "SPOOL_IN_MEMORY", 999 * 4 - 1)
      res = evaluate("hellinger_distance", p, q, out=False, reductions=(needs,))
    assert res.per_row is None and res.summary[needs] == ref.summary[needs] and len(spools) == 1
    spools.clear()


def test_iterator_of_pairs_in_any_sizes():
  p, q = _probs((1234, 21), 11), _probs((1234, 21), 12)
  ref = evaluate("jeffreys_divergence", p, q, reductions=ALL)
  sizes = np.random.default_rng(13).integers(1, 400, 100)
  bounds = np.minimum(np.concatenate([[0], np.cumsum(sizes)]), 1234)

  def batches():
    for a, b in zip(bounds[:-1], bounds[1:]):
      if b > a:
        yield p[a:b], q[a:b]

  res = evaluate("jeffreys_divergence", batches(), batch_size=256, reductions=ALL)
  assert res.per_row.tobytes() == ref.per_row.tobytes()
  assert res.summary == ref.summary
  ent = evaluate("entropy", (p[i:i + 100] for i in range(0, 1234, 100)), batch_size=256)
  np.testing.assert_array_equal(ent.per_row, evaluate("entropy", p).per_row)


def test_axis_and_batch_shape():
  p = _probs((4, 6, 10), 14)  # distribution on axis 1 after the move below
  q = _probs((4, 6, 10), 15)
  pt, qt = np.moveaxis(p, -1, 1), np.moveaxis(q, -1, 1)
  res = evaluate("kl_divergence", pt, qt, axis=1, batch_size=7)
  assert res.per_row.shape == (4, 6)
  np.testing.assert_allclose(res.per_row, np.asarray(jaxdiv.kl_divergence(p, q)), rtol=3e-6)


def test_jax_array_input_and_callable_divergence():
  p, q = jnp.asarray(_probs((100, 5), 16)), jnp.asarray(_probs((100, 5), 17))

  def sq(a, b, *, axis):
    return jnp.sum((a - b) ** 2, axis=axis)

  res = evaluate(sq, p, q)
  np.testing.assert_allclose(res.per_row, np.sum((np.asarray(p) - np.asarray(q)) ** 2, -1),
                             rtol=1e-6)
  with pytest.raises(ValueError, match="one value a row"):
    evaluate(lambda a, b, axis: a - b, p, q)
  # Where the step's own trace fails (a scalar is no row of the sharded result), the block's
  # names the shape; an error of the function's own is its own.
  with pytest.raises(ValueError, match=r"returned shape \(\) for a batch of shape"):
    evaluate(lambda a, b, axis: jnp.sum(a - b), p, q)
  with pytest.raises(TypeError, match="dot_general requires contracting dimensions"):
    evaluate(lambda a, b, axis: jnp.dot(a, b), p, q)


def test_float64_inputs_under_x64(x64):
  p, q = _probs((500, 9), 18).astype(np.float64), _probs((500, 9), 19).astype(np.float64)
  res = evaluate("kl_divergence", p, q, reductions=ALL)
  assert res.per_row.dtype == np.float64
  np.testing.assert_array_equal(list(res.summary["quantiles"].values()),
                                np.quantile(res.per_row, (0.01, 0.1, 0.5, 0.9, 0.99)))


def test_progress_bar_runs(capsys):
  p = _probs((600, 4), 20)
  evaluate("entropy", p, progress=True, batch_size=256)
  # tqdm writes to stderr only after its delay; the run must simply not fail.


# ------------------------------------------------------------------------ NaN policies ----

def _with_bad_rows():
  p, q = _probs((1000, 6), 21), _probs((1000, 6), 22)
  p[[3, 500]] = np.nan
  q[[500, 700, 999]] = np.inf
  return p, q


def test_nan_fail_counts_rows_and_writes_nothing(tmp_path):
  p, q = _with_bad_rows()
  with pytest.raises(NonFiniteInputError, match=r"2 rows of p and 3 rows of q \(4 of 1000 rows;"
                     r" first at row 3\)"):
    evaluate("kl_divergence", p, q, out=tmp_path / "o.npy", batch_size=256)
  assert os.listdir(tmp_path) == []


def test_nan_skip_and_propagate():
  p, q = _with_bad_rows()
  bad = np.zeros(1000, bool)
  bad[[3, 500, 700, 999]] = True
  res = evaluate("kl_divergence", p, q, nan_policy="skip", reductions=ALL, batch_size=256)
  assert np.isnan(res.per_row[bad]).all() and np.isfinite(res.per_row[~bad]).all()
  good = evaluate("kl_divergence", p[~bad], q[~bad], reductions=ALL)
  np.testing.assert_array_equal(res.per_row[~bad], good.per_row)
  s = res.summary
  assert s["skipped_rows"] == 4 and s["nonfinite_input_rows"] == {"p": 2, "q": 3}
  for k in ("mean", "std", "min", "max", "quantiles", "histogram"):
    assert s[k] == good.summary[k], k
  prop = evaluate("kl_divergence", p, q, nan_policy="propagate")
  assert np.isnan(prop.summary["mean"])


def test_minus_inf_logits_are_not_bad_rows():
  p, q = _logits((300, 7), 23), _logits((300, 7), 24)
  p[:, 0] = -np.inf
  res = evaluate("kl_divergence", p, q, from_logits=True)
  assert np.isfinite(res.per_row).all()
  with pytest.raises(NonFiniteInputError):
    evaluate("kl_divergence", np.exp(p), np.exp(q) * np.inf)


# ---------------------------------------------------------------------------- errors ----

def test_errors():
  p, q = _probs((10, 4), 25), _probs((10, 5), 26)
  with pytest.raises(InputError, match=r"different shapes: \(10, 4\) and \(10, 5\)"):
    evaluate("kl_divergence", p, q)
  with pytest.raises(TypeError, match="dtype int64"):
    evaluate("kl_divergence", p, np.ones((10, 4), np.int64))
  with pytest.raises(ValueError, match="valid names: .*kl_divergence"):
    evaluate("kl", p, p)
  with pytest.raises(TypeError, match=r"needs the parameter\(s\) \['alpha'\]"):
    evaluate("renyi_divergence", p, p)
  with pytest.raises(TypeError, match="takes no parameter"):
    evaluate("kl_divergence", p, p, alpha=2.0)
  with pytest.raises(ValueError, match="q is missing"):
    evaluate("kl_divergence", p)
  with pytest.raises(ValueError, match="nan_policy"):
    evaluate("kl_divergence", p, p, nan_policy="ignore")
  with pytest.raises(ValueError, match="alpha"):  # the divergence's own trace-time check
    evaluate("renyi_divergence", p, p, alpha=-1.0)


# ----------------------------------------------------------------------------- files ----

def test_npz_stored_is_mapped_and_compressed_is_streamed(tmp_path):
  a = _logits((700, 12), 27)
  np.savez(tmp_path / "s.npz", logits=a, other=a[:2])
  np.savez_compressed(tmp_path / "c.npz", logits=a)
  m = open_array(tmp_path / "s.npz", "logits")
  assert isinstance(m, np.memmap)
  np.testing.assert_array_equal(m, a)
  c = open_array(tmp_path / "c.npz")
  assert isinstance(c, _io.ZipStream)
  np.testing.assert_array_equal(c.read_rows(5, 9), a[5:9])
  np.testing.assert_array_equal(c.read_rows(0, 2), a[:2])  # backwards: restarts
  res_c = evaluate("entropy", c, from_logits=True, batch_size=256)
  np.testing.assert_array_equal(res_c.per_row, evaluate("entropy", a, from_logits=True).per_row)
  with pytest.raises(InputError, match="holds 2 arrays"):
    open_array(tmp_path / "s.npz")
  with pytest.raises(InputError, match="no array named 'nope'"):
    open_array(tmp_path / "s.npz", "nope")
  with zipfile.ZipFile(tmp_path / "c.npz") as z:
    assert z.infolist()[0].compress_type == zipfile.ZIP_DEFLATED


def test_safetensors_parsed_without_torch(tmp_path):
  safetensors_numpy = pytest.importorskip("safetensors.numpy")
  import ml_dtypes

  a = _logits((64, 10), 28)
  b16 = a.astype(ml_dtypes.bfloat16)
  safetensors_numpy.save_file({"a": a, "b": b16}, str(tmp_path / "t.safetensors"))
  m = open_array(tmp_path / "t.safetensors", "a")
  assert isinstance(m, np.memmap)
  np.testing.assert_array_equal(m, a)
  np.testing.assert_array_equal(open_array(tmp_path / "t.safetensors", "b"), b16)
  res = evaluate("entropy", open_array(tmp_path / "t.safetensors", "b"), from_logits=True)
  assert res.per_row.dtype == ml_dtypes.bfloat16


def test_missing_and_unreadable_files(tmp_path):
  with pytest.raises(InputError, match="no such file"):
    open_array(tmp_path / "missing.npy")
  (tmp_path / "junk.npy").write_bytes(b"not an array at all")
  with pytest.raises(InputError, match="junk.npy"):
    open_array(tmp_path / "junk.npy")
  (tmp_path / "junk.safetensors").write_bytes(b"\x01")
  with pytest.raises(InputError, match="not a .safetensors file"):
    open_array(tmp_path / "junk.safetensors")
  (tmp_path / "x.txt").write_text("1 2 3")
  with pytest.raises(InputError, match="unknown array format '.txt'"):
    open_array(tmp_path / "x.txt")
  with pytest.raises(InputError, match="is a directory"):
    open_array(tmp_path)


def test_atomic_writer_leaves_nothing_on_failure(tmp_path):
  with pytest.raises(KeyboardInterrupt):
    with _io.AtomicNpyWriter(tmp_path / "o.npy", np.float32) as w:
      w.write(np.arange(10, dtype=np.float32))
      raise KeyboardInterrupt
  assert os.listdir(tmp_path) == []
  with _io.AtomicNpyWriter(tmp_path / "o.npy", np.float32) as w:
    w.write(np.arange(10, dtype=np.float32))
    w.write(np.arange(5, dtype=np.float32))
    w.commit((3, 5))
  np.testing.assert_array_equal(np.load(tmp_path / "o.npy"),
                                np.concatenate([np.arange(10), np.arange(5)]).reshape(3, 5))


def test_rows_the_device_reads_in_place_are_not_read_ahead_by_a_thread(tmp_path, monkeypatch):
  """Batches that are views the device takes as they are (a memory-mapped .npy; an array on a
  64-byte boundary) run without the reading thread; an array NumPy placed 16 bytes past a
  boundary is copied into aligned buffers by it. Every way gives the same bytes."""
  from jaxdiv.evaluation import _evaluate
  from jaxdiv.evaluation import _prefetch
  from jaxdiv.evaluation import _sources
  rows, n = 3 * 4096 + 5, 64
  x = np.random.default_rng(0).normal(size=(2, rows, n)).astype(np.float32)
  np.save(tmp_path / "p.npy", x[0])
  np.save(tmp_path / "q.npy", x[1])
  mapped = [np.load(tmp_path / f, mmap_mode="r") for f in ("p.npy", "q.npy")]
  aligned = [_sources.empty((rows, n), np.float32) for _ in range(2)]
  raw = np.empty(2 * rows * n * 4 + 64, np.uint8)
  start = 16 + (-raw.ctypes.data % 64)  # 16 bytes past a boundary
  shifted = raw[start:start + 2 * rows * n * 4].view(np.float32).reshape(2, rows, n)
  for a, s, v in zip(aligned, shifted, x):
    a[...], s[...] = v, v
  depths = []

  class Recording(_prefetch.Prefetcher):
    def __init__(self, items, depth):
      depths.append(depth)
      super().__init__(items, depth)

  monkeypatch.setattr(_evaluate, "Prefetcher", Recording)
  out = {}
  for name, (p, q) in (("mapped", mapped), ("aligned", aligned), ("shifted", shifted)):
    out[name] = evaluate("kl_divergence", p, q, from_logits=True, batch_size=4096).per_row
  assert depths == [0, 0, 2]
  assert out["mapped"].tobytes() == out["aligned"].tobytes() == out["shifted"].tobytes()
  want = np.asarray(jaxdiv.kl_divergence(x[0].astype(np.float64), x[1].astype(np.float64),
                                         from_logits=True))
  np.testing.assert_allclose(out["mapped"], want, rtol=1e-5, atol=1e-6)


def test_rows_in_place_are_contiguous_and_aligned_at_every_batch():
  """A view goes to the device as it is only where its own first row is on a 64-byte boundary
  and its rows are contiguous: with 17 float32 entries a row, row 16 is the next aligned one,
  and a column slice of a wider array is never in place."""
  from jaxdiv.evaluation import _sources
  a = _sources.empty((64, 17), np.float32)
  rows = _sources.Rows(a, -1, "p")
  assert [s for s in range(40) if rows.in_place(s)] == [0, 16, 32]
  assert _sources.zero_copy([rows], [np.dtype(np.float32)], 16, 16, 0, 16)
  assert not _sources.zero_copy([rows], [np.dtype(np.float32)], 8, 8, 0, 8)
  wide = _sources.Rows(_sources.empty((64, 32), np.float32)[:, :16], -1, "p")
  assert not wide.in_place(0)
  assert not _sources.zero_copy([wide], [np.dtype(np.float32)], 16, 16, 0, 16)


@pytest.mark.parametrize("prefetch", [-1, 1.5, True, "2"])
def test_prefetch_must_be_a_whole_number_not_below_zero(prefetch):
  p = _probs((10, 4), 0)
  with pytest.raises(ValueError, match="prefetch"):
    evaluate("kl_divergence", p, p, prefetch=prefetch)


def test_a_copy_on_write_memmap_keeps_its_edits(tmp_path):
  """Rows edited in a copy-on-write memmap (`mmap_mode="c"`) are computed as edited and stay
  edited: dropping their pages after use (as for a read-only map) would discard the edits."""
  rows, n = 3 * 4096 + 7, 256
  x = np.random.default_rng(1).normal(size=(rows, n)).astype(np.float32)
  np.save(tmp_path / "p.npy", x)
  p = np.load(tmp_path / "p.npy", mmap_mode="c")
  p[:] = -p
  q = np.zeros((rows, n), np.float32)
  got = evaluate("kl_divergence", p, q, from_logits=True, batch_size=4096).per_row
  np.testing.assert_array_equal(p, -x)
  want = evaluate("kl_divergence", -x, q, from_logits=True, batch_size=4096).per_row
  assert got.tobytes() == want.tobytes()


def test_prefetcher_without_a_thread_raises_where_the_items_fail():
  from jaxdiv.evaluation._prefetch import Prefetcher
  closed = []

  def items():
    try:
      yield 1
      yield 2
      raise OSError("disk")
    finally:
      closed.append(True)

  for depth in (0, 2):
    got = []
    with pytest.raises(OSError, match="disk"):
      for item in Prefetcher(items(), depth):
        got.append(item)
    assert got == [1, 2]
  closed.clear()
  pf = Prefetcher(items(), 0)
  assert next(iter(pf)) == 1
  pf.close()
  assert closed == [True]


def test_memmap_pages_are_released(tmp_path):
  """Reading a memmap through evaluate does not leave the whole file resident."""
  if not hasattr(__import__("mmap"), "MADV_DONTNEED"):
    pytest.skip("no madvise here")
  rows, n = 64 * 256, 1024  # 64 MiB
  p = np.lib.format.open_memmap(tmp_path / "p.npy", "w+", np.float32, (rows, n))
  p[:] = 1.0 / n
  p.flush()
  del p
  pm = np.load(tmp_path / "p.npy", mmap_mode="r")
  evaluate("entropy", pm, batch_size=1024)
  resident = _resident_bytes(tmp_path / "p.npy")
  if resident is None:
    pytest.skip("/proc/self/smaps unavailable")
  assert resident < 16 * 2**20, resident


def _resident_bytes(path) -> int | None:
  try:
    text = open("/proc/self/smaps").read()
  except OSError:
    return None
  total, inside = 0, False
  for line in text.splitlines():
    if "-" in line.split(" ")[0] and len(line.split()) >= 5 and ":" not in line.split()[0]:
      inside = line.endswith(os.fspath(path))
    elif inside and line.startswith("Rss:"):
      total += int(line.split()[1]) * 1024
  return total


def test_batch_size_for_budget():
  from jaxdiv.evaluation import batch_size_for_budget

  # prefetch (2) + 3 batches of both inputs in flight, plus 4 float32 temporaries a row
  assert batch_size_for_budget(2**30, 1000, [4, 4]) == 2**30 // (1000 * (8 * 5 + 16))
  assert batch_size_for_budget(1, 10**6, [4]) == 1
  assert math.isfinite(batch_size_for_budget(2**20, 3, [2]))


# ------------------------------------------------------------ what the caller is told ----

def test_out_that_is_an_input_is_refused_before_any_work(tmp_path):
  p, q = _probs((500, 6), 30), _probs((500, 6), 31)
  np.save(tmp_path / "p.npy", p)
  np.save(tmp_path / "q.npy", q)
  (tmp_path / "link.npy").symlink_to(tmp_path / "p.npy")
  os.link(tmp_path / "q.npy", tmp_path / "hard.npy")
  pm = np.load(tmp_path / "p.npy", mmap_mode="r")
  qm = np.load(tmp_path / "q.npy", mmap_mode="r")
  for out, victim in [("p.npy", "p.npy"), ("link.npy", "p.npy"), ("hard.npy", "q.npy")]:
    with pytest.raises(InputError, match="it would be overwritten") as e:
      evaluate("kl_divergence", pm, qm, out=tmp_path / out)
    assert f"out={str(tmp_path / out)!r}" in str(e.value) and victim in str(e.value)
    assert "--out" not in str(e.value)
  np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), p)
  np.testing.assert_array_equal(np.load(tmp_path / "q.npy"), q)
  assert sorted(os.listdir(tmp_path)) == ["hard.npy", "link.npy", "p.npy", "q.npy"]


def test_out_that_cannot_be_written_fails_first_without_temporary_names(tmp_path, monkeypatch):
  from jaxdiv.evaluation import _compile

  def must_not_compile(*args, **kwargs):
    raise AssertionError("compiled before checking out")

  monkeypatch.setattr(_compile, "compiled", must_not_compile)
  p = _probs((100, 5), 32)
  (tmp_path / "adir").mkdir()
  with pytest.raises(InputError, match="is a directory") as e:
    evaluate("entropy", p, out=tmp_path / "adir")
  assert ".partial" not in str(e.value)
  with pytest.raises(InputError, match="does not exist"):
    evaluate("entropy", p, out=tmp_path / "missing" / "o.npy")
  assert os.listdir(tmp_path) == ["adir"]


def test_a_destination_that_fails_at_commit_is_named_not_its_temporary(tmp_path):
  dest = tmp_path / "s.json"
  with pytest.raises(InputError, match="cannot write") as e:
    with _io.atomic_write_text(dest) as f:
      f.write("{}")
      dest.mkdir()  # someone made a directory of that name meanwhile
  assert str(dest) in str(e.value) and ".partial" not in str(e.value)
  assert os.listdir(tmp_path) == ["s.json"] and _io.temporary_files() == []


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_are_created_as_the_umask_says(tmp_path, umask):
  old = os.umask(umask)
  try:
    with _io.AtomicNpyWriter(tmp_path / "o.npy", np.float32) as w:
      w.write(np.arange(3, dtype=np.float32))
      w.commit()
    with _io.atomic_write_text(tmp_path / "s.json") as f:
      f.write("{}")
  finally:
    os.umask(old)
  for name in ("o.npy", "s.json"):
    assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask, name


def test_logits_given_as_probabilities_raise_with_the_argument_to_pass(tmp_path):
  logits = _logits((700, 9), 33)
  with pytest.raises(NotProbabilitiesError) as e:
    evaluate("kl_divergence", logits, _logits((700, 9), 34), out=tmp_path / "o.npy")
  msg = str(e.value)
  assert "p does not hold probabilities: row 0" in msg and "from_logits=True" in msg, msg
  assert "--from-logits" not in msg and "--from-logits" in e.value.cli_message
  assert os.listdir(tmp_path) == []
  # Unnormalised but positive rows, and Bernoulli parameters outside [0, 1], are caught too.
  with pytest.raises(NotProbabilitiesError, match=r"row 0 sums to"):
    evaluate("entropy", np.exp(logits))
  with pytest.raises(NotProbabilitiesError, match=r"outside \[0, 1\]"):
    evaluate("binary_entropy", np.full((10, 3), 1.5, np.float32))
  # Probabilities pass, in low precision too; validate=False evaluates whatever it is given.
  evaluate("js_divergence", _probs((300, 1000), 35).astype(np.float16), _probs((300, 1000), 36))
  res = evaluate("kl_divergence", logits, logits, validate=False)
  np.testing.assert_array_equal(
      res.per_row, np.asarray(jaxdiv.kl_divergence(logits, logits), np.float32))


def test_a_run_whose_every_result_is_nan_raises():
  p = _probs((300, 4), 37)

  def nan_divergence(p, *, axis):
    return jnp.full(p.shape[:axis % p.ndim], jnp.nan)

  with pytest.raises(AllNaNError, match="every one of the 300 results is NaN"):
    evaluate(nan_divergence, p)
  assert np.isnan(evaluate(nan_divergence, p, validate=False).per_row).all()


def test_summary_arguments_are_checked_before_any_work():
  """What the summary at the end of a run needs is checked on entry: a bad value failed the
  run there, its work lost."""
  p, q = _probs((50, 4), 38), _probs((50, 4), 39)
  calls = []

  def kl(p, q, *, axis):
    calls.append(1)
    return jaxdiv.kl_divergence(p, q, axis=axis)

  bad = [(dict(quantiles=(1.5,)), ValueError, r"quantiles must lie in \[0, 1\]"),
         (dict(quantiles=(math.nan,)), ValueError, "quantiles must lie"),
         (dict(quantiles=(-0.5,)), ValueError, "quantiles must lie"),
         (dict(quantiles="0.5"), TypeError, "iterable of probabilities"),
         (dict(quantiles=0.5), TypeError, "iterable of probabilities"),
         (dict(quantiles=("a",)), TypeError, "iterable of probabilities"),
         (dict(quantiles=["0.5"]), TypeError, "iterable"),
         (dict(quantiles=[True]), TypeError, "iterable"),
         (dict(bins=0), ValueError, r"bins must lie in \[1, 1048576\]"),
         (dict(bins=-1), ValueError, "bins must lie"), (dict(bins=10**12), ValueError, "bins"),
         (dict(bins=2.5), TypeError, "bins must be a whole number"),
         (dict(bins=True), TypeError, "whole number"),
         (dict(names=("x", "x")), ValueError, "two different names")]
  for kw, error, match in bad:
    with pytest.raises(error, match=match):
      evaluate(kl, p, q, reductions=ALL, **kw)
  assert not calls  # not even traced
  # An `out` array too narrow for the results (known once the divergence is traced) is
  # refused before the first batch: in it the quantiles and histogram were those of rounded
  # values beside the moments of the exact ones.
  for out, match in [(np.zeros(50, np.float16), "out has dtype float16"),
                     (np.zeros(50, np.int32), "cannot hold the per-row results")]:
    with pytest.raises(TypeError, match=match):
      evaluate(kl, p, q, reductions=ALL, out=out)
    assert not out.any()
  # No quantiles asked: none reported; a wider `out` holds the results exactly.
  res = evaluate(kl, p, q, reductions=ALL, quantiles=(), out=np.zeros(50, np.float64))
  assert res.summary["quantiles"] == {}
  np.testing.assert_array_equal(res.per_row, evaluate(kl, p, q).per_row)
  # Any iterable of probabilities and any whole number of bins, as before; neither checked
  # where its reduction is not asked for.
  want = evaluate(kl, p, q, reductions=ALL, quantiles=(0.1, 0.5), bins=5).summary
  for qs, bins in [({0.5, 0.1}, np.array(5)), ((x for x in (0.1, 0.5)), jnp.int32(5)),
                   (np.array([0.1, 0.5]), np.int64(5))]:
    assert evaluate(kl, p, q, reductions=ALL, quantiles=qs, bins=bins).summary == want
  evaluate(kl, p, q, reductions=("mean",), quantiles=(2.0,), bins=0)


def test_std_of_results_beyond_the_square_root_of_the_float64_range():
  """Squares of results beyond 1e154 overflowed: equal results of 2.5e159 had a NaN standard
  deviation, spread ones an infinite one."""
  tiny = np.random.default_rng(40).normal(size=_reduce.CHUNK) * 1e-200
  zeros = np.zeros(_reduce.CHUNK)
  cases = [np.full(100, 2.5e159), np.array([1e160, 3e160, -2e160]),
           np.array([1.5e308, -1.5e308, 0.0]),
           np.concatenate([np.full(70000, 1e200), np.full(70000, 3e200)]),
           tiny[:1000] * 1e-100,
           # a chunk of zeros (KL exactly 0 on every row) before or after tiny results
           np.concatenate([tiny, zeros]), np.concatenate([zeros, tiny]),
           np.concatenate([tiny, [0.0]])]
  for v in cases:
    m = _reduce.Moments()
    for part in np.array_split(v, 3):
      m.add(part)
    m.finish()
    scale = np.max(np.abs(v))
    want = np.std(v / scale) * scale  # float64, scaled by hand
    assert want > 0 or np.all(v == v[0])
    np.testing.assert_allclose(m.std, want, rtol=1e-12, atol=1e-15 * scale)


def test_many_axes_bfloat16_and_float8_results_are_written_and_read(tmp_path):
  """A results shape of many axes (its .npy header longer than 256 bytes) failed the commit;
  bfloat16 results were written as raw bytes ('<V2', unreadable as numbers): they are stored
  as float32, exactly; float8 inputs are computed in float32."""
  import ml_dtypes

  p = _probs((6, 3), 41).reshape((2, 3) + (1,) * 56 + (3,))
  res = evaluate("entropy", p, out=tmp_path / "many.npy")
  assert res.per_row.shape == p.shape[:-1]
  np.testing.assert_array_equal(np.load(res.per_row.filename), evaluate("entropy", p).per_row)
  b = _probs((40, 5), 42).astype(ml_dtypes.bfloat16)
  path = tmp_path / "bf16.npy"
  res = evaluate("entropy", b, out=path, reductions=ALL)
  stored = np.load(path)
  assert stored.dtype == np.float32
  want = evaluate("entropy", b).per_row
  assert want.dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(stored, want.astype(np.float32))
  f8 = _probs((40, 5), 43).astype(ml_dtypes.float8_e4m3fn)
  res = evaluate("entropy", f8, validate=False)
  got = res.per_row
  assert got.dtype == np.float32 and res.timing["bytes_read"] == 40 * 5  # as stored
  assert jaxdiv.evaluation.compute_dtype(f8.dtype) == np.float32
  np.testing.assert_array_equal(got, evaluate("entropy", f8.astype(np.float32),
                                              validate=False).per_row)


def test_all_nan_message_says_where_the_nan_came_from():
  p = _probs((20, 4), 44)
  p[:] = np.nan
  with pytest.raises(AllNaNError, match="20 of them from rows with NaN or inf inputs"):
    evaluate("entropy", p, nan_policy="propagate")
  with pytest.raises(AllNaNError, match="20 skipped for NaN or inf inputs"):
    evaluate("entropy", p, nan_policy="skip")


def test_library_messages_name_arguments_not_flags(monkeypatch):
  p, q = _with_bad_rows()
  with pytest.raises(NonFiniteInputError) as e:
    evaluate("kl_divergence", p, q)
  assert 'nan_policy="skip"' in str(e.value) and "--nan" not in str(e.value)
  assert "--nan skip" in e.value.cli_message
  monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
  with pytest.raises(ImportError, match="progress=True needs tqdm"):
    evaluate("entropy", _probs((10, 3), 38), progress=True)


def test_json_summaries_hold_null_for_nan():
  doc = jsonable({"mean": float("nan"), "max": np.float32(np.inf), "q": [1.0, math.nan]})
  assert doc == {"mean": None, "max": "inf", "q": [1.0, None]}
