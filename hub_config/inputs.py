"""The rules one service input's value must pass (type, length, pattern, range, choices).

Used for the defaults an admin writes in the catalog and for every value a user sends.
"""

from __future__ import annotations

import math
import re

from .catalog import InputSpec, InputValue
from .patterns import CONTROL as _CONTROL

__all__ = ["InputError", "check_input", "coerce_form_value"]

_INTEGER = re.compile(r"^[+-]?\d{1,18}$")
_NUMBER = re.compile(r"^[+-]?(\d{1,18}(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?$")
_TRUE = {"on", "true", "1", "yes"}
_FALSE = {"", "off", "false", "0", "no"}


class InputError(ValueError):
    """A value that does not pass its input's rules; the text says what is allowed."""


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_input(spec: InputSpec, value: object) -> InputValue:
    """Return ``value`` if it passes ``spec``'s rules, else raise :class:`InputError`."""
    if spec.type == "boolean":
        if not isinstance(value, bool):
            raise InputError(f"expected true or false, got {_show(value)}")
        return value
    if spec.type in ("integer", "number"):
        integer = spec.type == "integer"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(
                f"expected {'a whole number' if integer else 'a number'}, got {_show(value)}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"expected a finite number, got {_show(value)}")
        if integer and isinstance(value, float):
            # JSON has one kind of number: 2.0 is the whole number 2 (as JSON Schema says).
            if not value.is_integer():
                raise InputError(f"expected a whole number, got {_show(value)}")
            value = int(value)
        if spec.minimum is not None and value < spec.minimum:
            raise InputError(f"{value} is below the minimum of {spec.minimum:g}")
        if spec.maximum is not None and value > spec.maximum:
            raise InputError(f"{value} is above the maximum of {spec.maximum:g}")
        return value
    if not isinstance(value, str):
        raise InputError(f"expected text, got {_show(value)}")
    if spec.type == "choice":
        if value not in spec.choices:
            raise InputError(f"{_show(value)} is not one of: {', '.join(spec.choices)}")
        return value
    if _CONTROL.search(value):
        raise InputError("control characters such as newlines are not allowed")
    if len(value) > spec.max_length:
        raise InputError(f"{len(value)} characters is too long; at most {spec.max_length} allowed")
    if len(value) < spec.min_length:
        raise InputError(f"too short; at least {spec.min_length} characters needed")
    if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
        raise InputError(f"{_show(value)} does not match the allowed pattern {spec.pattern}")
    return value


def coerce_form_value(spec: InputSpec, text: str) -> InputValue:
    """Turn a form field's text into the input's type (checking comes after)."""
    text = text.strip() if spec.type != "string" else text
    if spec.type == "boolean":
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise InputError(f"expected on or off, got {_show(text)}")
    if spec.type == "integer":
        if not _INTEGER.match(text):
            raise InputError(f"expected a whole number, got {_show(text)}")
        return int(text)
    if spec.type == "number":
        if not _NUMBER.match(text):
            raise InputError(f"expected a number, got {_show(text)}")
        return float(text)
    return text
