"""Batched, multi-device evaluation of divergences over inputs larger than memory.

``jaxdiv.evaluate`` is the function :func:`evaluate`; this package, ``jaxdiv.evaluation``,
holds it with the names that go with it.
"""

from jaxdiv.evaluation._compile import batch_size_for_budget
from jaxdiv.evaluation._compile import block_rows
from jaxdiv.evaluation._compile import budget_batch
from jaxdiv.evaluation._evaluate import MAX_BINS
from jaxdiv.evaluation._evaluate import EvalResult
from jaxdiv.evaluation._evaluate import evaluate
from jaxdiv.evaluation._io import InputError
from jaxdiv.evaluation._io import atomic_write_text
from jaxdiv.evaluation._io import check_destination
from jaxdiv.evaluation._io import open_array
from jaxdiv.evaluation._io import overwritten_input
from jaxdiv.evaluation._io import parse_size
from jaxdiv.evaluation._io import same_file
from jaxdiv.evaluation._registry import DIVERGENCES
from jaxdiv.evaluation._registry import DivergenceSpec
from jaxdiv.evaluation._sources import device_dtype as compute_dtype
from jaxdiv.evaluation._validate import AllNaNError
from jaxdiv.evaluation._validate import NonFiniteInputError
from jaxdiv.evaluation._validate import NotProbabilitiesError

__all__ = [
    "DIVERGENCES",
    "AllNaNError",
    "DivergenceSpec",
    "EvalResult",
    "MAX_BINS",
    "InputError",
    "NonFiniteInputError",
    "NotProbabilitiesError",
    "atomic_write_text",
    "batch_size_for_budget",
    "block_rows",
    "budget_batch",
    "check_destination",
    "compute_dtype",
    "evaluate",
    "open_array",
    "overwritten_input",
    "parse_size",
    "same_file",
]
