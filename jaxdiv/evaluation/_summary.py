"""The summary of a run: counts, moments, exact quantiles and a histogram of the per-row results."""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from jaxdiv.evaluation import _compile
from jaxdiv.evaluation import _reduce
from jaxdiv.evaluation._validate import NonFiniteInputError


class Tally:
  """The host side of each batch, in order: bad input rows counted and handled as `nan_policy`
  says, the validator's checks, the results written to the sink and added to the moments."""

  def __init__(self, sink, nan_policy: str, n_inputs: int, validator, bar=None):
    self.sink, self.nan_policy, self.validator, self.bar = sink, nan_policy, validator, bar
    self.moments = _reduce.Moments()
    self.bad_counts = [0] * n_inputs
    self.bad_total, self.first_bad, self.done = 0, None, 0

  def add(self, results, valid: int):
    """One batch's step results, a `(values, bad_rows, stats)` per block in order, of which the
    first `valid` rows are real."""
    fetched = [jax.tree.map(_compile.fetch, r) for r in results]
    vals, bads, stats = jax.tree.map(lambda *xs: np.concatenate(xs), *fetched)
    v, bad_any = vals[:valid], np.zeros(valid, bool)
    for k, b in enumerate(bads):
      self.bad_counts[k] += int(b[:valid].sum())
      bad_any |= b[:valid]
    self.validator.batch(stats, bad_any, self.done)
    if bad_any.any():
      if self.first_bad is None:
        self.first_bad = self.done + int(np.argmax(bad_any))
      self.bad_total += int(bad_any.sum())
      if self.nan_policy == "skip":
        v = np.where(bad_any, np.array(np.nan, v.dtype), v)
    if self.nan_policy != "fail" or self.bad_total == 0:  # else nothing will be written
      self.sink.write(v)
      self.moments.add(v, ~bad_any if self.nan_policy == "skip" else None)
    self.done += valid
    if self.bar is not None:
      self.bar.update(valid)

  def finish(self, names):
    """After the last batch: raises what the whole pass found (bad rows, only NaN)."""
    self.moments.finish()
    if self.nan_policy == "fail" and self.bad_total:
      detail = " and ".join(f"{c} row{'s' if c != 1 else ''} of {nm}"
                            for c, nm in zip(self.bad_counts, names) if c)
      head = (f"NaN or inf in {detail} ({self.bad_total} of {self.done} rows; first at row"
              f" {self.first_bad})")
      raise NonFiniteInputError(f'{head}; nan_policy="skip" leaves them out',
                                f"{head}; --nan skip leaves them out")
    self.validator.end(self.moments, self.done,
                       self.bad_total if self.nan_policy == "skip" else 0, self.bad_total)

  def summary(self, name, names, reductions, qs, bins, dtype) -> dict[str, Any]:
    return summarize(name, self.moments, self.sink, self.done, self.bad_total,
                     self.bad_counts, names, self.nan_policy, reductions, qs, bins, dtype)


def summarize(name, moments: _reduce.Moments, sink, rows: int, bad_total: int, bad_counts,
              names, nan_policy: str, reductions, qs, bins: int, dtype) -> dict[str, Any]:
  """The summary dict of :class:`EvalResult`.

  `nan_rows` counts the rows whose per-row result is NaN: those whose divergence is NaN
  (`nan_results`) plus those skipped under ``nan_policy="skip"`` (`skipped_rows`).
  """
  skipped = bad_total if nan_policy == "skip" else 0
  s: dict[str, Any] = {
      "divergence": name,
      "rows": rows,
      "nonfinite_input_rows": {nm: c for nm, c in zip(names, bad_counts)},
      "skipped_rows": skipped,
      "nan_results": moments.nan_results,
      "nan_rows": skipped + moments.nan_results,
  }
  if "mean" in reductions:
    s["mean"] = moments.mean
  if "sum" in reductions:
    s["sum"] = moments.total
  if "std" in reductions:
    s["std"] = moments.std
  if "min" in reductions:
    s["min"] = moments.min if moments.count > moments.nan_results else math.nan
  if "max" in reductions:
    s["max"] = moments.max if moments.count > moments.nan_results else math.nan
  bits = 64 if dtype.itemsize == 8 else 32
  wide = np.float64 if bits == 64 else np.float32

  def clean():
    for c in sink.chunks():
      c = c.astype(wide, copy=False)
      yield c[~np.isnan(c)]

  if "quantiles" in reductions:
    n_ok = moments.count - moments.nan_results
    s["quantiles"] = {repr(float(k)): v for k, v in
                      _reduce.quantiles(clean, n_ok, qs, bits).items()}
  if "histogram" in reductions:
    finite_lo, finite_hi = _finite_range(clean)
    s["histogram"] = _reduce.histogram(clean, finite_lo, finite_hi, bins)
  return s


def _finite_range(chunks) -> tuple[float, float]:
  lo, hi = math.inf, -math.inf
  for c in chunks():
    c = c[np.isfinite(c)]
    if c.size:
      lo, hi = min(lo, float(c.min())), max(hi, float(c.max()))
  return lo, hi
