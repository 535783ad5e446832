"""Argument checks shared by every public entry point.

Each check raises ``ValueError`` naming the argument and what was expected, before any
kernel runs. Checks of values run only where the value is concrete: under ``jit`` or
``vmap`` a traced array has only its shape and dtype known, and those are still checked.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "is_concrete", "positive_int", "nonnegative_int", "integer", "real", "finite_scalar",
    "scalar_in_range", "one_of", "array", "shape", "finite", "finite_positive", "fraction",
]


def is_concrete(x: Any) -> bool:
    """Whether ``x`` holds values (is not a tracer of ``jit``/``vmap``/``grad``)."""
    return not isinstance(x, jax.core.Tracer)


def _is_int(x: Any) -> bool:
    return not isinstance(x, (bool, np.bool_)) and isinstance(x, (numbers.Integral, np.integer))


def integer(name: str, x: Any) -> int:
    """``x`` as a Python int; ValueError unless it is an integer (bools are refused)."""
    if not _is_int(x):
        raise ValueError(f"{name}: expected an int, got {x!r}")
    return int(x)


def positive_int(name: str, x: Any, *, or_none: bool = False) -> Optional[int]:
    """``x`` as a Python int >= 1 (or None where ``or_none``)."""
    if or_none and x is None:
        return None
    if not _is_int(x) or x <= 0:
        raise ValueError(f"{name}: expected a positive int{' or None' if or_none else ''}, got {x!r}")
    return int(x)


def nonnegative_int(name: str, x: Any) -> int:
    """``x`` as a Python int >= 0."""
    if not _is_int(x) or x < 0:
        raise ValueError(f"{name}: expected a non-negative int, got {x!r}")
    return int(x)


def real(name: str, x: Any) -> float:
    """``x`` as a Python float; ValueError unless it is a finite real number."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Real, np.number)):
        raise ValueError(f"{name}: expected a real number, got {x!r}")
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {x!r}")
    return v


def scalar_in_range(name: str, x: Any, lo: float = -math.inf, hi: float = math.inf, *,
                    lo_open: bool = True, hi_open: bool = True) -> Any:
    """Checks a scalar (number or 0-d array) is finite and within (lo, hi); returns ``x``.

    The bounds' openness is chosen by ``lo_open``/``hi_open``. A traced scalar has only
    its shape checked.
    """
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (numbers.Real, np.ndarray, np.number, jax.Array)):
        raise ValueError(f"{name}: expected a real number, got {type(x).__name__}")
    if hasattr(x, "shape") and np.shape(x) != ():
        raise ValueError(f"{name}: expected a scalar (vmap to sweep values), got shape {np.shape(x)}")
    if is_concrete(x):
        v = float(np.asarray(x))
        bad = (not math.isfinite(v) or (v <= lo if lo_open else v < lo)
               or (v >= hi if hi_open else v > hi))
        if bad:
            lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
            raise ValueError(f"{name}: expected a value in {lb}{lo:g}, {hi:g}{rb}, got {v!r}")
    return x


def finite_scalar(name: str, x: Any) -> Any:
    """A finite real scalar (number or 0-d array)."""
    return scalar_in_range(name, x)


def fraction(name: str, x: Any, *, closed: bool = True) -> float:
    """A number in [0, 1] (or (0, 1) where not ``closed``), as a float."""
    v = real(name, x)
    if (closed and not 0.0 <= v <= 1.0) or (not closed and not 0.0 < v < 1.0):
        raise ValueError(f"{name}: expected a number in {'[0, 1]' if closed else '(0, 1)'}, got {x!r}")
    return v


def one_of(name: str, x: Any, choices: Sequence[Any]) -> Any:
    """``x`` if it is one of ``choices``."""
    if x not in tuple(choices):
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {x!r}")
    return x


def array(name: str, x: Any, kind: str, rank: Optional[int] = None) -> Any:
    """Checks ``x`` is an array of dtype kind ``kind`` ('f' floating, 'i' integer, 'b' bool)."""
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise ValueError(f"{name}: expected an array, got {type(x).__name__}")
    ok = {"f": jnp.issubdtype(x.dtype, jnp.floating), "i": jnp.issubdtype(x.dtype, jnp.integer),
          "b": x.dtype == jnp.bool_}[kind]
    if not ok:
        want = {"f": "a floating", "i": "an integer", "b": "a bool"}[kind]
        raise ValueError(f"{name}: expected {want} dtype, got {x.dtype}")
    if rank is not None and x.ndim != rank:
        raise ValueError(f"{name}: expected {rank} dimensions, got shape {tuple(x.shape)}")
    return x


def shape(name: str, x: Any, expected: tuple) -> Any:
    """Checks ``x.shape == expected``; ``None`` in ``expected`` matches any length."""
    got = tuple(np.shape(x))
    if len(got) != len(expected) or any(e is not None and g != e for g, e in zip(got, expected)):
        want = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {got}")
    return x


def finite(name: str, x: Any) -> Any:
    """Checks a concrete array holds no NaN or inf."""
    if is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"{name}: expected finite values, found NaN or inf")
    return x


def finite_positive(name: str, x: Any) -> Any:
    """Checks a concrete array is finite and strictly positive (geometry coordinates)."""
    if is_concrete(x):
        v = np.asarray(x)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name}: expected finite values, found NaN or inf")
        if v.size and np.any(v <= 0):
            raise ValueError(f"{name}: expected strictly positive coordinates, smallest is {v.min():g}")
    return x
