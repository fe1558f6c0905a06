"""transferkit: label-efficient transfer learning across domains and tasks.

Main entry points: :func:`load_domain` (:func:`register_domain` names a domain of your own),
:func:`build_backbone`, :class:`Engine`, :class:`Transfer` (fit / predict / score) and
:func:`run_experiment`.
"""

__version__ = "0.1.0"

from .api import Transfer  # noqa: E402
from .backbones import build_backbone  # noqa: E402
from .clip import CaptionedDomain  # noqa: E402
from .config import ExperimentConfig, load_config  # noqa: E402
from .data import load_domain, register_domain  # noqa: E402
from .domain import Domain  # noqa: E402
from .engine import Engine, TrainConfig  # noqa: E402
from .errors import TransferkitError, TransferkitWarning  # noqa: E402
from .experiment import load_model, run_experiment  # noqa: E402
from .methods import list_methods, method_options  # noqa: E402
from .networks import load_network, save_network  # noqa: E402
from .userdata import read_images  # noqa: E402

__all__ = ["CaptionedDomain", "Domain", "Engine", "ExperimentConfig", "TrainConfig", "Transfer", "TransferkitError",
           "TransferkitWarning",
           "build_backbone", "list_methods", "load_config", "load_domain", "load_model", "method_options",
           "read_images", "register_domain", "run_experiment", "save_network", "load_network"]
