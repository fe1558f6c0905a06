"""Transfer methods, one module per family; each registers itself in :data:`METHODS`."""

from . import finetune, supervised  # noqa: F401  (registration)
from .base import METHODS, Method, get_method, register

__all__ = ["METHODS", "Method", "get_method", "register"]
