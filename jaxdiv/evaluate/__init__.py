"""Batched, multi-device evaluation of divergences over inputs larger than memory.

Note: ``jaxdiv.evaluate`` (the attribute of the top-level package) is the *function*
:func:`evaluate`; import the other names from this module, ``from jaxdiv.evaluate import ...``.
"""

from jaxdiv.evaluate._engine import DIVERGENCES
from jaxdiv.evaluate._engine import DivergenceSpec
from jaxdiv.evaluate._engine import EvalResult
from jaxdiv.evaluate._engine import NonFiniteInputError
from jaxdiv.evaluate._engine import batch_size_for_budget
from jaxdiv.evaluate._engine import evaluate
from jaxdiv.evaluate._io import InputError
from jaxdiv.evaluate._io import open_array

__all__ = [
    "DIVERGENCES",
    "DivergenceSpec",
    "EvalResult",
    "InputError",
    "NonFiniteInputError",
    "batch_size_for_budget",
    "evaluate",
    "open_array",
]
