"""Type aliases shared by every sub-package (the only module they all import)."""
from __future__ import annotations

from typing import Any, Callable, Union

import jax

Array = jax.Array
PyTree = Any
Shape = tuple[int, ...]
PRNGKey = jax.Array
Schedule = Callable[[Array], Array]
ScalarOrSchedule = Union[float, Schedule]
