"""User-facing error type.

Every error caused by user input (scenario file, image, domain size, ...) is raised as a
:class:`ScenarioError`, whose message always names the offending field (a dotted path into
the scenario, e.g. ``course.sessions[0].needles[1].tip``), the value found and what was
expected::

    course.sessions[0].needles[1].tip: got (0.0, 0.0, 0.05) m; expected a point inside the domain
    hint: the domain spans z in [-0.04, 0.002] m
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ScenarioError", "format_value"]


def format_value(value: Any) -> str:
    """Compact, readable text for a value in an error message."""
    if isinstance(value, np.ndarray):
        if value.size > 12:
            return f"array(shape={value.shape}, dtype={value.dtype})"
        value = value.tolist()
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    if isinstance(value, tuple | list) and len(value) <= 12:
        inner = ", ".join(format_value(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    return str(value)


class ScenarioError(ValueError):
    """Invalid user input.

    Attributes: ``field`` (dotted path), ``value`` (what was found), ``expected`` (unit or
    range as text) and optional ``hint``. ``str(err)`` is
    ``"<field>: got <value>; expected <expected>"`` followed by ``"\\nhint: <hint>"`` if given.
    """

    def __init__(self, field: str, value: Any, expected: str, hint: str | None = None):
        self.field = field
        self.value = value
        self.expected = expected
        self.hint = hint
        msg = f"{field}: got {format_value(value)}; expected {expected}"
        if hint:
            msg += f"\nhint: {hint}"
        super().__init__(msg)

    def __reduce__(self):  # keep picklable (multiprocessing) despite the custom signature
        return (type(self), (self.field, self.value, self.expected, self.hint))
