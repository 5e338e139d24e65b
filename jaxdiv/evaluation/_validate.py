"""`validate=True`: inputs taken as probabilities that are not, and runs that give only NaN;
and the errors about the data that a run reports."""

from __future__ import annotations

import numpy as np

from jaxdiv.evaluation import _io
from jaxdiv.evaluation import _reduce
from jaxdiv.evaluation._registry import DivergenceSpec

SUM_TOLERANCE = 0.1  # a row of probabilities summing farther than this from 1 is not one


class NonFiniteInputError(_io.InputError):
  """Raised under `nan_policy="fail"` when input rows hold NaN or +-inf."""


class NotProbabilitiesError(_io.InputError):
  """Raised when inputs given as probabilities are clearly not (logits without from_logits)."""


class AllNaNError(_io.InputError):
  """Raised when every per-row result of a run is NaN (nothing is written)."""


class Validator:
  """The host side of `validate`: probabilities that are not, and runs that give only NaN."""

  def __init__(self, spec: DivergenceSpec, from_logits: bool, validate: bool, kwargs, names):
    self.names = names
    self.inputs = None
    if validate and spec.inputs != "any" and not from_logits:
      # A mask changes what a row sums to: only the sign is checked then.
      self.inputs = spec.inputs if "where" not in kwargs else "nonnegative"
    self.validate = validate

  def kind(self) -> str | None:
    """What the compiled step reports per row (see `_compile.compiled`); None: nothing."""
    return None if self.inputs is None else (
        "bernoulli" if self.inputs == "bernoulli" else "distribution")

  def batch(self, stats, bad_any: np.ndarray, first_row: int):
    """Raises NotProbabilitiesError at the first row of the batch that is not probabilities."""
    for (lo, second), name in zip(stats, self.names):
      lo, second = lo[:bad_any.size], second[:bad_any.size]
      if self.inputs == "bernoulli":
        wrong = (lo < 0) | (second > 1)
      elif self.inputs == "distribution":
        wrong = (lo < 0) | (np.abs(second - 1) > SUM_TOLERANCE)
      else:
        wrong = lo < 0
      wrong &= ~bad_any  # NaN and inf rows are nan_policy's
      if not wrong.any():
        continue
      i = int(np.argmax(wrong))
      if self.inputs == "bernoulli":
        what = (f"row {first_row + i} has entries outside [0, 1] (from {lo[i]:.4g} to"
                f" {second[i]:.4g})")
      else:
        why = ([f"sums to {second[i]:.4g}"] if self.inputs == "distribution" and
               abs(second[i] - 1) > SUM_TOLERANCE else [])
        why += [f"has negative entries (smallest {lo[i]:.4g})"] if lo[i] < 0 else []
        what = f"row {first_row + i} " + " and ".join(why)
      head = f"{name} does not hold probabilities: {what}"
      raise NotProbabilitiesError(
          f"{head}; if the inputs are logits, pass from_logits=True (validate=False evaluates"
          " them as they are)",
          f"{head}; if the inputs are logits, pass --from-logits (--no-validate evaluates them"
          " as they are)")

  def end(self, moments: _reduce.Moments, rows: int, skipped: int, nonfinite: int = 0):
    """Raises AllNaNError when no row gave a number (`skipped` rows left out, `nonfinite` rows
    of NaN or inf inputs in all)."""
    if not self.validate or rows == 0 or moments.count > moments.nan_results:
      return
    why = (f"{skipped} skipped for NaN or inf inputs" if skipped else
           f"{nonfinite} of them from rows with NaN or inf inputs" if nonfinite else
           "no input row holds NaN or inf")
    raise AllNaNError(f"every one of the {rows} results is NaN ({why}); nothing was written"
                      " (validate=False accepts such a run)",
                      f"every one of the {rows} results is NaN ({why}); nothing was written"
                      " (--no-validate accepts such a run)")
