"""Transfer methods, one module per family; each registers itself in :data:`METHODS`."""

from . import adversarial, discrepancy, dsn, finetune, flex, image_unit, pixel, semantic, supervised, tap  # noqa: F401
from .base import METHODS, Method, get_method, list_methods, method_options, register

__all__ = ["METHODS", "Method", "get_method", "list_methods", "method_options", "register"]
