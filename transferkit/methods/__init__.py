"""Transfer methods, one module per family; each registers itself in :data:`METHODS`."""

from . import (  # noqa: F401
    adain,
    adversarial,
    discrepancy,
    dsn,
    finetune,
    flex,
    image_unit,
    multitask,
    pixel,
    semantic,
    supervised,
    tap,
    unit_gan,
)
from .base import METHODS, Method, get_method, list_methods, method_options, register

__all__ = ["METHODS", "Method", "get_method", "list_methods", "method_options", "register"]
