"""Spawners: the shared validator and launch spec, and one thin module per backend."""

from .options import OptionsError, Selection, validate_user_options
from .spec import LaunchSpec, build_launch_spec

__all__ = [
    "LaunchSpec",
    "OptionsError",
    "Selection",
    "build_launch_spec",
    "validate_user_options",
]
