"""Checks for the numbers configs and calls take: one wording for every "must be" error.

A count given as 2.5 or True, or a rate of inf, is a caller's slip that would otherwise surface
steps later as a TypeError from torch or a silent NaN; these raise ``SipgradError`` naming the
field at construction.
"""

from __future__ import annotations

import math
import numbers

from sipgrad.errors import SipgradError


def check_count(label: str, value: object, minimum: int = 1) -> None:
    """``value`` must be an integer (a Python or numpy one, not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
        raise SipgradError(f"{label} must be {wanted}, got {value!r}")


def check_finite(label: str, value: object, positive: bool = False) -> None:
    """``value`` must be a finite real number (not a bool), and above 0 with ``positive``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or (positive and not value > 0):
        wanted = "a positive finite number" if positive else "a finite number"
        raise SipgradError(f"{label} must be {wanted}, got {value!r}")
