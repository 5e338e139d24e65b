"""The summary of a run: counts, moments, exact quantiles and a histogram of the per-row results."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jaxdiv.evaluation import _reduce


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
