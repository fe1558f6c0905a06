"""Network files: :func:`save_network` writes a network's weights (and the classes of its
head's rows) as safetensors, the file that ``pretrained:`` and :func:`load_network` read;
:func:`network_digest` names a network's weights in rows."""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from pathlib import Path

import torch

from .backbones import build_backbone, check_unitnet, is_built_in, known_outputs
from .engine import content_text
from .errors import TransferkitError, UnknownNameError, check
from .heads import PROTOTYPE_METRICS, PrototypeHead
from .io import load_safetensors, relative_hint, save_safetensors
from .methods.base import Method

#: what a ``pretrained:`` file must be, and what writes one
PRETRAINED_FILE = ("pretrained: takes a safetensors file of the backbone's weights, the UnitNet's state_dict (keys "
                   "units.<unit>.… and head.…)")
SAVE_NETWORK = "transferkit.save_network(net, path, class_names=[...]) writes one (README: pretrained)"


def file_channels(backbone: str, num_classes: int, image_size: int, state: dict) -> int | None:
    """The image channels (1 or 3) of the one build of ``backbone`` whose keys and shapes a network
    file's ``state`` has; None where neither or both fit (a builder that refuses some channels,
    e.g. a plugin's colour network, fits those it builds)."""
    def fits(channels: int) -> bool:
        with torch.random.fork_rng(devices=[]):  # a check: the caller's random state stays
            try:
                built = build_backbone(backbone, num_classes=num_classes, in_channels=channels,
                                       image_size=image_size, head=head_kind(state))
            except Exception:  # a builder's own refusal of these channels (a plugin's ValueError, ...)
                return False
        own = built.state_dict()
        return set(own) == set(state) - _input_norm_keys(built) and all(own[k].shape == state[k].shape for k in own)
    found = [c for c in (1, 3) if fits(c)]
    return found[0] if len(found) == 1 else None


def network_digest(net: torch.nn.Module) -> str:
    """A digest of a network's weights and buffers (16 hex digits): rows record the source
    network they started from (``source_digest``)."""
    return hashlib.sha256(content_text(net).encode()).hexdigest()[:16]


def save_network(net, path: str | os.PathLike, class_names=None) -> Path:
    """Write ``net``'s weights (a :class:`~transferkit.backbones.UnitNet`'s state_dict, keys
    ``units.<unit>.…`` and ``head.…``) to the safetensors file ``path``, atomically: the file
    that ``pretrained:`` reads. ``class_names``: the source classes of the head's rows, in
    order (stored as the metadata ``class_names``, a JSON list; a run checks them against its
    source's), as a pre-training of transferkit stores them. A fitted model (a ``Transfer``, or
    the method :func:`~transferkit.experiment.load_model` returns) gives its network and classes, and is refused when
    its network alone does not make its predictions (``Method.predicts_with_net``)."""
    method = net if isinstance(net, Method) else getattr(net, "method_", None)  # a loaded method, or a Transfer
    if isinstance(method, Method):
        check(method.predicts_with_net, f"save_network: {method.name} does not predict with its network alone "
                                        f"({method.name}'s predictions also read {method.predictor_parts()}), so the "
                                        f"network's weights would classify otherwise: save the whole model "
                                        f"(torch.save(model, path)) or trace it, torch.jit.trace(model.method_ or the "
                                        f"loaded method, example_images)")
        class_names = class_names if class_names is not None else getattr(net, "classes_", None)
        net = method.net
    check_unitnet(net, "save_network")
    extra = _added_parameters(net)
    check(not extra, f"save_network: the network holds parameters its backbone {net.name!r} does not have "
                     f"({extra[0] if extra else ''}, ...: a method added them, as ft_ss's scale-and-shift or "
                     f"image_unit's image unit), so a file of it would not load as the backbone's weights "
                     f"(pretrained:, load_network); save the whole model (torch.save(model, path)) or trace it")
    class_names = class_names if class_names is not None else getattr(net, "class_names", None)
    metadata = None
    if class_names is not None:
        names = list(class_names)
        rows = known_outputs(net)
        check(all(isinstance(c, str) for c in names) and len(names) == (rows or len(names)),
              f"save_network: class_names must name the {rows} rows of the head, in order, as text "
              f"(the source domain's class_names), got {names[:12]}")
        metadata = {"class_names": json.dumps(names)}
    if isinstance(getattr(net, "head", None), PrototypeHead):  # what its state holds not: how it scores
        metadata = {**(metadata or {}), "prototype_head": json.dumps({"metric": net.head.metric,
                                                                      "scale": net.head.scale})}
    return save_safetensors(path, {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, metadata)


def restore_head(net, metadata: dict, path: str | os.PathLike = "") -> None:
    """A prototype head's metric and scale, which :func:`save_network` stores beside its prototypes
    (a file without them: the defaults, sqeuclidean); ``path``: the file, named where they are not
    a JSON object of a known metric and a finite scale > 0."""
    stored = metadata.get("prototype_head")
    if stored is not None and isinstance(net.head, PrototypeHead):
        net.head.metric, net.head.scale = _prototype_options(stored, path)


def _prototype_options(stored, path) -> tuple[str, float]:
    """The ``(metric, scale)`` of a network file's ``prototype_head`` metadata, checked."""
    where = f"network file {path}: its metadata prototype_head"
    try:
        options = json.loads(stored)
    except (TypeError, ValueError):
        options = None
    check(isinstance(options, dict), f"{where} must be a JSON object {{\"metric\": ..., \"scale\": ...}} "
                                     f"(save_network writes it), got {str(stored)[:80]!r}")
    metric, scale = options.get("metric"), options.get("scale")
    check(metric in PROTOTYPE_METRICS, f"{where}: its metric must be one of {', '.join(PROTOTYPE_METRICS)}, got "
                                       f"{str(metric)[:80]!r}")
    try:
        value = float(scale) if isinstance(scale, (int, float)) and not isinstance(scale, bool) else math.nan
    except OverflowError:  # an integer past float's range
        value = math.inf
    check(math.isfinite(value) and value > 0, f"{where}: its scale must be a finite number > 0, got "
                                              f"{str(scale)[:80]!r}")
    return metric, value


def _torch_file(path: Path) -> bool:
    """``path`` is what ``torch.save`` writes: a zip archive with a ``data.pkl``, or a bare pickle."""
    try:
        with open(path, "rb") as f:
            if f.read(1) == b"\x80":
                return True
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("data.pkl") for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_network_file(net, path: str | os.PathLike, classes: list[str] | None = None, hint: str = "",
                      read=None) -> None:
    """Load ``path`` into ``net``. With ``classes`` (the source's), a file that names the
    classes of its head's rows (transferkit's pre-trainings since 2026-12-01) must name
    these, in this order: the rows are taken by position. ``hint``: what to do when it is unreadable;
    ``read``: its ``(state, metadata)`` when the caller has read them (:func:`read_network_file`)."""
    path = Path(path).expanduser()
    state, metadata = read or read_network_file(path, hint)
    stored = stored_classes(path, metadata)
    if classes is not None and stored is not None and stored != list(classes):
        raise TransferkitError(f"pre-trained network {path} was trained on the classes {stored} (its "
                               f"head's rows in that order), but the source has {list(classes)}: its outputs would "
                               f"mean other classes. Give source_classes in the network's order, or pre-train anew")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        check_state_fits(net, state, f"pre-trained network {path}")  # names the first of each kind in one line
        raise TransferkitError(f"pre-trained network {path} does not fit backbone {net.name!r}: {e}") from e
    net.eval()


def read_network_file(path: Path, hint: str = "") -> tuple[dict, dict]:
    """A network file's tensors and metadata (its stored class names); a ``torch.save`` file is
    refused, naming what to write instead."""
    check(path.exists(), f"pre-trained network {str(path)!r} does not exist{relative_hint(path)}")
    try:
        return load_safetensors(path, "pre-trained network", hint)
    except TransferkitError as e:
        if not _torch_file(path):
            raise
        raise TransferkitError(f"pre-trained network {path} is a PyTorch file (torch.save), not a safetensors file: "
                               f"{PRETRAINED_FILE}. Build the backbone, load your weights into it "
                               f"(net.load_state_dict(torch.load(file)) when they have its keys; else load them into "
                               f"your own module and cut that into units as the builder does); then {SAVE_NETWORK}"
                               ) from e


def head_kind(state: dict) -> str:
    """The kind of head (:data:`~transferkit.heads.HEADS`) whose parameters a network's state holds."""
    return "prototype" if "head.prototypes" in state else "cosine" if "head.scale" in state else "linear"


def _input_norm_keys(net) -> set[str]:
    """The state keys of an :class:`~transferkit.unitnet.InputNorm` first in ``net``'s first unit
    (``add_input_norm``, ImageNet weights), which ``UnitNet.load_state_dict`` restores."""
    return {f"units.{net.unit_names[0]}.norm.{b}" for b in ("mean", "std")}


def _added_parameters(net) -> list[str]:
    """The state keys of a built-in backbone's network that a fresh build of it lacks (a method's
    additions; an input normalisation first, which loading restores, is none); none for a
    network of another builder or of no declared input shape."""
    if not is_built_in(net.name) or net.input_shape is None:
        return []
    state = net.state_dict()
    with torch.random.fork_rng(devices=[]):  # a check: the caller's random state stays
        try:
            fresh = build_backbone(net.name, num_classes=known_outputs(net) or 1, in_channels=net.input_shape[0],
                                   image_size=net.input_shape[-1], head=head_kind(state))
        except TransferkitError:
            return []
    own = fresh.state_dict()
    return [k for k in state if k not in own and k not in _input_norm_keys(fresh)]


def load_network(path: str | os.PathLike, backbone: str, in_channels: int | None = None, image_size: int = 28):
    """The network of a :func:`save_network` file (or a run's ``source.safetensors``), built as
    ``backbone`` for images of ``in_channels`` x ``image_size`` (``None``: the channels, 1 or 3,
    whose build the file fits, else 1): its head has the rows the file
    holds, and ``net.class_names`` the classes the file names for them (None where it names none).
    ``Transfer.fit(net=net)`` without ``source=`` then matches the target's classes to those rows
    by name, not by position."""
    path = Path(path).expanduser()
    check(path.is_file(), f"load_network: {path} does not exist or is not a file{relative_hint(path)}")
    state, metadata = read_network_file(path)
    names = stored_classes(path, metadata)
    heads = [v for k, v in state.items() if k.startswith("head.") and k.endswith(("weight", "prototypes"))
             and v.dim() == 2]  # a linear or cosine head's weight, or a prototype head's prototypes
    rows = len(names) if names is not None else int(heads[-1].shape[0]) if heads else None
    check(rows is not None, f"load_network: {path} names no classes and holds no head weight to count its rows by")
    if in_channels is None:
        in_channels = file_channels(backbone, rows, image_size, state) or 1
    try:
        net = build_backbone(backbone, num_classes=rows, in_channels=in_channels, image_size=image_size,
                             head=head_kind(state))  # a cosine or prototype head, as finetune_cosine / _proto train
    except UnknownNameError as e:
        if e.kind != "backbone":
            raise
        raise TransferkitError(f"load_network: {e}; a network of your own module (from_modules, from_sequential) "
                               f"is not built by name: build and cut it again, then "
                               f"transferkit.networks.load_network_file(net, {str(path)!r})") from None
    load_network_file(net, path, read=(state, metadata))
    restore_head(net, metadata, path)
    net.class_names = names
    return net


def stored_classes(path: Path, metadata: dict) -> list[str] | None:
    """The class names a network file stores for its head's rows (a JSON list of text), if any."""
    stored = metadata.get("class_names")
    if stored is None:
        return None
    try:
        names = json.loads(stored)
    except ValueError:
        names = None
    check(isinstance(names, list) and all(isinstance(c, str) for c in names),
          f"pre-trained network {path}: its metadata class_names must be a JSON list of class names, got "
          f"{stored[:80]!r} (save_network writes it)")
    return names


def check_state_fits(net, state: dict, what: str) -> None:
    """Refuse, in one line, a ``state`` dict that ``net`` cannot load: how many tensors are
    missing, unexpected or of another shape, with the first of each."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shaped = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if not (missing or unexpected or shaped):
        return
    parts = [f"{len(missing)} tensor(s) missing (first {missing[0]!r})"] if missing else []
    parts += [f"{len(unexpected)} unexpected (first {unexpected[0]!r})"] if unexpected else []
    if shaped:
        k = shaped[0]
        parts.append(f"{len(shaped)} of another shape (first {k!r}: {tuple(state[k].shape)} in the file, "
                     f"{tuple(own[k].shape)} here)")
    raise TransferkitError(f"{what} does not fit backbone {net.name!r}: "
                           f"{'; '.join(parts)}. It was saved from another backbone, or for another number of "
                           f"classes, channels or image size")
