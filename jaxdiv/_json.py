"""JSON for the summaries that `jaxdiv.evaluate`, the command line and the demo write."""

from __future__ import annotations

import math

import numpy as np


def jsonable(x):
  """A summary as JSON can hold it: non-finite floats become the strings 'inf', '-inf',
  'nan'; NumPy scalars become Python numbers; dicts, lists and tuples are converted inside."""
  if isinstance(x, np.generic):
    x = x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return str(x)
  if isinstance(x, dict):
    return {k: jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  return x
