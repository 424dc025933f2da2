"""The one argument check ``train`` needs that ``functional_dl.checks`` does not have yet."""
from __future__ import annotations

from typing import Any

import numpy as np

from functional_dl import checks


def boolean(name: str, value: Any) -> bool:
    """``bool(value)`` for ``True``/``False`` (Python or NumPy); TypeError for anything else."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {checks.describe(value)}")
    return bool(value)
