"""transferkit: label-efficient transfer learning across domains and tasks.

Main entry points: :func:`load_domain` (:func:`register_domain` names a domain of your own),
:func:`build_backbone`, :class:`Engine`, :class:`Transfer` (fit / predict / score) and
:func:`run_experiment`. Each is loaded (with torch) on first use: ``import transferkit.cli`` or
``transferkit.errors`` loads neither, so the ``transferkit`` command handles a Ctrl-C while they load.
"""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: the module of each name of :data:`__all__`
_HOMES = {"Transfer": "api", "build_backbone": "backbones", "CaptionedDomain": "clip",
          "ExperimentConfig": "config", "load_config": "config", "load_domain": "data", "register_domain": "data",
          "Domain": "domain", "Engine": "engine", "TrainConfig": "engine", "TransferkitError": "errors",
          "TransferkitWarning": "errors", "load_model": "experiment", "run_experiment": "experiment",
          "list_methods": "methods", "method_options": "methods", "load_network": "networks",
          "save_network": "networks", "read_images": "userdata"}

__all__ = ["CaptionedDomain", "Domain", "Engine", "ExperimentConfig", "TrainConfig", "Transfer", "TransferkitError",
           "TransferkitWarning",
           "build_backbone", "list_methods", "load_config", "load_domain", "load_model", "method_options",
           "read_images", "register_domain", "run_experiment", "save_network", "load_network"]


def __getattr__(name: str):
    """A name of :data:`__all__`, or a module of the package (``transferkit.data`` after ``import
    transferkit``, as the eager imports gave), imported on first use (PEP 562)."""
    import importlib
    import importlib.util
    if name in _HOMES:
        value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    elif name.isidentifier() and not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}"):
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # the names for type checkers and editors
    from .api import Transfer
    from .backbones import build_backbone
    from .clip import CaptionedDomain
    from .config import ExperimentConfig, load_config
    from .data import load_domain, register_domain
    from .domain import Domain
    from .engine import Engine, TrainConfig
    from .errors import TransferkitError, TransferkitWarning
    from .experiment import load_model, run_experiment
    from .methods import list_methods, method_options
    from .networks import load_network, save_network
    from .userdata import read_images
