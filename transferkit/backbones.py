"""Backbones cut into ordered, named **units** (seed 002 §3: ``N = N_L o ... o N_1``).

A unit is the granularity for fine-tuning, flex-tuning (tune one unit), layer tapping and
multi-layer discriminators. :class:`UnitNet` holds the feature units, a parameter-free
``pool`` that turns the last feature unit's output into an ``N x D`` embedding, and a
classifier ``head`` that is itself the last unit, named ``"head"``::

    x -> units[0] -> ... -> units[L-1] -> pool -> embedding (N x D) -> head -> logits

Besides the unit names, ``"embedding"`` names the pooled ``N x D`` activation.

Built-in backbones (:func:`build_backbone`): ``convnet4`` (seed 000 Table 4), ``lenet``
(seed 000 Table 7), ``convnet7`` (seed 002 §5.1) and ``resnet18`` (torchvision layout).
Any ``nn.Sequential`` or torchvision/timm-like model can be cut into units with
:func:`from_sequential` / :func:`from_modules`. torchvision is imported lazily and only by
:func:`load_torchvision_weights`.

This module holds the built-in networks and their registry (``BACKBONES``); it is also the
public path of the network API: :class:`UnitNet` and its helpers live in
:mod:`transferkit.unitnet`, :func:`from_sequential` and :func:`from_modules` in
:mod:`transferkit.adapters`, and each is imported from here as well.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections import OrderedDict
from typing import Callable, Mapping

import torch
import torch.nn as nn

from .adapters import from_modules, from_sequential  # noqa: F401  (cutting your own modules, ditto)
from .errors import TransferkitError, UnknownNameError, check, first_line, first_named, is_whole
from .heads import make_head
from .registry import Registry, without_addresses
from .runtime import float32_default
from .unitnet import (  # noqa: F401  (the network API's public path; run models/*.pt pickled before 2026-12-04 name it)
    ALL_UNITS,
    EMBEDDING,
    HEAD,
    InputNorm,
    UnitNet,
    _shape3,
    add_input_norm,
    evaluating,
    reinitialise,
)

# ---- small convnets --------------------------------------------------------------------

def _conv_unit(cin: int, cout: int, kernel: int = 3, pad: int = 1, bn: bool = True,
               pool: bool = True) -> nn.Sequential:
    """conv - [BN] - ReLU - [maxpool 2x2], computed as conv - [BN] - [maxpool] - ReLU: the
    ReLU is monotonic, so it commutes with the max; outputs and gradients are bit for bit
    those of the textbook order (tested) with a quarter of the ReLU's work (about 20 % of a
    lenet training step whose gradient reaches conv1, on CPU). Parameter keys are unchanged."""
    layers = [nn.Conv2d(cin, cout, kernel, padding=pad)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers += [nn.MaxPool2d(2), nn.ReLU()] if pool else [nn.ReLU()]
    return nn.Sequential(*layers)


def _dummy_pass(units: Mapping[str, nn.Module], input_shape: tuple) -> torch.Tensor:
    """The output of ``units`` in eval mode on one zero image of ``input_shape`` (RuntimeError
    when the input is too small for them)."""
    h = torch.zeros(1, *input_shape)
    with torch.no_grad():
        for m in units.values():
            h = m.eval()(h)
    return h


def _smallest_size_hint(units: Mapping[str, nn.Module], input_shape: tuple, limit: int = 256) -> str:
    """``"; the smallest square input it takes is S x S"``, found by trying sizes up to ``limit``."""
    for size in range(min(input_shape[1:]) + 1, limit + 1):
        try:
            _dummy_pass(units, (input_shape[0], size, size))
        except RuntimeError:
            continue
        return (f"; the smallest square input it takes is {size} x {size} (image_size: {size} or more in a "
                f"config, domain.to_format(size={size}) in Python)")
    return ""


def _flat_dim(name: str, units: Mapping[str, nn.Module], input_shape: tuple) -> int:
    try:
        return _dummy_pass(units, input_shape)[0].numel()
    except RuntimeError as e:
        raise TransferkitError(f"{name}: input shape {input_shape} is too small for this backbone"
                               f"{_smallest_size_hint(units, input_shape)}") from e
    finally:
        for m in units.values():
            m.train()


def _fc_unit(din: int, dout: int, dropout: float = 0.0) -> nn.Sequential:
    layers = [nn.Flatten(1), nn.Linear(din, dout), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def convnet4(num_classes: int, in_channels: int = 1, image_size=28) -> UnitNet:
    """Embedding net of seed 000 Table 4 (SVHN->MNIST), 5 feature units + head.

    Units ``conv1..conv4``: conv3x3x64 (pad 1) - BN - ReLU - maxpool 2x2; ``fc1``: flatten -
    Linear(->64) - ReLU; ``head``: Linear(64 -> num_classes). At 28x28 the four pools give
    1x1x64, so fc1 is 64x64 as in the table; otherwise its input size comes from a dry run.
    """
    shape = _shape3(in_channels, image_size)
    units = OrderedDict(conv1=_conv_unit(shape[0], 64), conv2=_conv_unit(64, 64),
                        conv3=_conv_unit(64, 64), conv4=_conv_unit(64, 64))
    units["fc1"] = _fc_unit(_flat_dim("convnet4", units, shape), 64)
    return UnitNet(units, make_head("linear", 64, num_classes), name="convnet4", input_shape=shape)


def lenet(num_classes: int, in_channels: int = 1, image_size=28) -> UnitNet:
    """ADDA's LeNet, seed 000 Table 7: conv-ReLU-maxpool units ``conv1``, ``conv2``, ``fc1``, head.

    ``conv1``: conv5x5x20 - ReLU - maxpool 2x2; ``conv2``: conv5x5x50 - ReLU - maxpool 2x2;
    ``fc1``: flatten - Linear(800 -> 500) - ReLU; ``head``: Linear(500 -> num_classes).
    Documented deviation: Table 7 prints conv2 as 5x5x20, but its fc1 is 800x500, which
    needs 50 channels (4*4*50 = 800 at 28x28, as in Caffe's LeNet used by ADDA); we use 50.
    """
    shape = _shape3(in_channels, image_size)
    units = OrderedDict(conv1=_conv_unit(shape[0], 20, kernel=5, pad=0, bn=False),
                        conv2=_conv_unit(20, 50, kernel=5, pad=0, bn=False))
    units["fc1"] = _fc_unit(_flat_dim("lenet", units, shape), 500)
    return UnitNet(units, make_head("linear", 500, num_classes), name="lenet", input_shape=shape)


def convnet7(num_classes: int, in_channels: int = 1, image_size=28, dropout: float = 0.0) -> UnitNet:
    """The "7 layers network (5 conv + 2 fc one-layer units)" of seed 002 §5.1.

    The paper gives no sizes; our choice: ``conv1..conv5`` are conv3x3 (pad 1) - BN - ReLU
    with 32, 32, 64, 64, 128 channels and a 2x2 max pool ending conv2, conv4 and conv5
    (28 px -> 3x3x128, 32 px -> 4x4x128); ``fc1``: flatten - Linear(->128) - ReLU
    (- Dropout(``dropout``), off by default); ``head``: Linear(128 -> num_classes).
    """
    shape = _shape3(in_channels, image_size)
    units = OrderedDict(conv1=_conv_unit(shape[0], 32, pool=False), conv2=_conv_unit(32, 32),
                        conv3=_conv_unit(32, 64, pool=False), conv4=_conv_unit(64, 64),
                        conv5=_conv_unit(64, 128))
    units["fc1"] = _fc_unit(_flat_dim("convnet7", units, shape), 128, dropout)
    return UnitNet(units, make_head("linear", 128, num_classes), name="convnet7", input_shape=shape)


# ---- ResNet-18 (torchvision layout) ----------------------------------------------------

def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (same submodule names, so its weights load as is)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def _res_layer(inplanes: int, planes: int, stride: int) -> nn.Sequential:
    down = None
    if stride != 1 or inplanes != planes:
        down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                             nn.BatchNorm2d(planes))
    return nn.Sequential(BasicBlock(inplanes, planes, stride, down), BasicBlock(planes, planes))


def resnet18(num_classes: int, in_channels: int = 3, image_size=224,
             small_input: bool | None = None) -> UnitNet:
    """ResNet-18 (seed 000 §b, torchvision layout): units ``stem``, ``layer1..layer4``, head.

    ``stem`` holds torchvision's ``conv1, bn1, relu, maxpool`` (conv7x7 s2 + maxpool 3x3 s2);
    ``small_input=True`` (default when ``image_size < 64``) uses a conv3x3 s1 and no maxpool,
    as CIFAR ResNets do. Pool: global average pool + flatten; head: Linear(512 -> num_classes).
    Weights are initialised as in torchvision (Kaiming-normal convs, BN = identity).
    """
    shape = _shape3(in_channels, image_size)
    if small_input is None:
        small_input = min(shape[1:]) < 64
    if small_input:
        conv1, maxpool = nn.Conv2d(shape[0], 64, 3, 1, 1, bias=False), nn.Identity()
    else:
        conv1, maxpool = nn.Conv2d(shape[0], 64, 7, 2, 3, bias=False), nn.MaxPool2d(3, 2, 1)
    stem = nn.Sequential(OrderedDict(conv1=conv1, bn1=nn.BatchNorm2d(64), relu=nn.ReLU(inplace=True),
                                     maxpool=maxpool))
    units = OrderedDict(stem=stem, layer1=_res_layer(64, 64, 1), layer2=_res_layer(64, 128, 2),
                        layer3=_res_layer(128, 256, 2), layer4=_res_layer(256, 512, 2))
    for m in units.values():
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    net = UnitNet(units, make_head("linear", 512, num_classes), pool=pool, name="resnet18", input_shape=shape)
    net.small_input = bool(small_input)
    return net


def _torchvision_key(key: str) -> str:
    if key.startswith(("conv1.", "bn1.")):
        return "units.stem." + key
    if key.startswith("layer"):
        return "units." + key
    if key.startswith("fc."):
        return "head." + key[3:]
    return key


#: the per-channel input statistics torchvision's ImageNet weights were trained with
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)




def load_torchvision_weights(net: UnitNet, weights="IMAGENET1K_V1", normalize: bool = True) -> dict[str, list[str]]:
    """Load torchvision ResNet-18 weights into a :func:`resnet18` UnitNet.

    weights: a torchvision weights name (imports torchvision lazily, may download) or a
        state dict in torchvision's layout. ``fc`` goes to the head only if shapes match.
        For a 1-channel net the RGB ``conv1`` filters are summed over input channels.
    normalize: put the ImageNet input normalisation the weights expect first in the stem
        (:func:`add_input_norm`; images stay in [0, 1]). A 1-channel net uses the channel
        means of ``IMAGENET_MEAN`` / ``IMAGENET_STD`` (grey replicated to RGB, approximately).
    Returns ``{"loaded": [...], "skipped": [...]}`` (keys in ``net``'s layout).
    """
    own = net.state_dict()  # a net of another architecture is named before torchvision is asked for
    check("units.stem.conv1.weight" in own and "units.layer4.1.bn2.weight" in own,
          f"load_torchvision_weights expects a resnet18 UnitNet, got {getattr(net, 'name', net)!r}")
    if isinstance(weights, Mapping):
        sd = weights
    else:
        try:
            import torchvision
        except ImportError as e:
            raise TransferkitError("loading torchvision weights needs torchvision: "
                                   "pip install 'transferkit[vision]'") from e
        sd = torchvision.models.resnet18(weights=weights).state_dict()
    new, loaded, skipped = {}, [], []
    for k, v in sd.items():
        nk = _torchvision_key(k)
        if nk.startswith("head.") and (nk not in own or own[nk].shape != v.shape):
            skipped.append(nk)
            continue
        check(nk in own, f"unexpected torchvision key {k!r}: is this a ResNet-18 state dict?")
        if nk == "units.stem.conv1.weight" and own[nk].shape != v.shape:
            if own[nk].shape[1] == 1 and v.shape[1] == 3 and own[nk].shape[2:] == v.shape[2:]:
                v = v.sum(1, keepdim=True)
            else:
                raise TransferkitError(
                    f"stem conv1 has shape {tuple(own[nk].shape)} but the weights have {tuple(v.shape)}: "
                    "build resnet18 with small_input=False (7x7 stem) and 1 or 3 input channels")
        check(own[nk].shape == v.shape,
              f"shape mismatch for {nk}: {tuple(own[nk].shape)} vs {tuple(v.shape)}")
        new[nk] = v
        loaded.append(nk)
    missing = [k for k in own if k not in new and not k.startswith(("head.", "units.stem.norm."))]
    check(not missing, f"torchvision weights lack [{first_named(map(repr, missing))}]")
    net.load_state_dict(new, strict=False)
    if normalize:
        c = net.unit("stem").conv1.weight.shape[1]
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if c == 3 else ([sum(IMAGENET_MEAN) / 3], [sum(IMAGENET_STD) / 3])
        add_input_norm(net, mean, std)
    return {"loaded": loaded, "skipped": skipped}


# ---- registry --------------------------------------------------------------------------

#: ``{name: builder}``; a plugin registers its own with ``BACKBONES["name"] = builder`` (a name
#: held by another builder, a built-in, is refused)
BACKBONES: dict[str, Callable[..., UnitNet]] = Registry("backbone", "choose another name for the builder", {
    "convnet4": convnet4, "lenet": lenet, "convnet7": convnet7, "resnet18": resnet18,
}, home="transferkit.backbones.BACKBONES")


#: the names of the builders transferkit ships (BACKBONES refuses a plugin's builder under one)
BUILT_IN: frozenset[str] = frozenset(BACKBONES)


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


def builder_of(name: str) -> Callable[..., UnitNet]:
    """The builder registered as backbone ``name``."""
    return BACKBONES[name]


def is_built_in(name: str) -> bool:
    """``name`` is registered with the builder transferkit ships (not a plugin's)."""
    return name in BUILT_IN


def definition_digest(net: torch.nn.Module, builder: Callable | None = None) -> str:
    """A digest of a network's definition: its modules (``repr``, memory addresses left out), the
    names and shapes of its parameters and buffers, the code of its module classes defined outside
    torch and transferkit (:func:`own_code`) and, when given, the ``builder``'s source
    (:func:`~transferkit.data.builder_source`). A builder changed in place (another activation,
    other layer sizes, another ``forward``) gives another digest; the weights do not count. A
    network of torch and transferkit modules alone, built without ``builder``, has the digest it
    had before the code counted."""
    text = without_addresses(repr(net))
    shapes = [(n, list(t.shape)) for n, t in [*net.named_parameters(), *net.named_buffers()]]
    code = own_code(net)
    if builder is not None:
        from .data import builder_source

        code.append(without_addresses(builder_source(builder)))
    return hashlib.sha256(json.dumps([text, shapes, *([code] if code else [])]).encode()).hexdigest()[:16]


def own_code(net: torch.nn.Module) -> list[str]:
    """The code of the module classes of ``net`` (and their bases) defined outside torch and
    transferkit: each one's source file (so a helper its ``forward`` calls counts too; read as a
    domain's builder is, :func:`~transferkit.data.builder_source`) and always the compiled code of its
    own functions (what is left where the source is not found: a class made by ``exec`` or in some
    notebooks)."""
    from .data import builder_source, code_text

    classes = {c for m in net.modules() for c in type(m).__mro__
               if (c.__module__ or "").split(".")[0] not in ("torch", "transferkit", "builtins")}
    out = []
    for c in sorted(classes, key=lambda c: (c.__module__ or "", c.__qualname__)):
        functions = [code_text(f.__code__) for _, f in sorted(vars(c).items()) if hasattr(f, "__code__")]
        out.append(without_addresses(json.dumps([c.__module__, c.__qualname__, builder_source(c), functions])))
    return out


def check_unitnet(net, what: str) -> None:
    """Refuse a network that is no :class:`UnitNet` (what reads its units: ``fit(net=)``, tapping)."""
    check(isinstance(net, UnitNet),
          f"{what}: net must be a transferkit UnitNet (build_backbone(...), or backbones.from_sequential / "
          f"from_modules to cut your own module into units), got {type(net).__name__}")


def check_input_shape(net, images: torch.Tensor, what: str) -> None:
    """Images of the shape ``net.input_shape`` (when the network declares one)."""
    shape = getattr(net, "input_shape", None)
    check(shape is None or tuple(images.shape[1:]) == tuple(shape),
          f"{what}: images of shape {tuple(images.shape[1:])}, the network takes {shape and tuple(shape)}: convert "
          f"them to its shape (domain.to_format(size=..., channels=...))")


def check_backbone(name) -> None:
    """Refuse what names no registered backbone, after importing the modules of
    ``$TRANSFERKIT_PLUGINS``, which may register their own in :data:`BACKBONES`."""
    if not isinstance(name, str):
        raise TransferkitError(f"backbone must be the name of a registered backbone ({', '.join(sorted(BACKBONES))}), "
                               f"got a {type(name).__name__}; give your own network to fit(net=...) (cut into units "
                               f"with from_sequential / from_modules), or register a builder in BACKBONES")
    if name not in BACKBONES:
        from .methods.base import load_outside_families

        load_outside_families()
    if name not in BACKBONES:
        from .runtime import plugin_hint

        raise UnknownNameError("backbone", name, BACKBONES, plugin_hint("backbone"))


def build_backbone(name: str, num_classes: int, in_channels: int = 1, image_size=28,
                   head: str = "linear", **kw) -> UnitNet:
    """Build a registered backbone; ``head`` picks the classifier kind, ``kw`` go to the builder."""
    check_backbone(name)
    fn = BACKBONES[name]
    fixed = ("num_classes", "in_channels", "image_size")
    known = [p for p in inspect.signature(fn).parameters if p not in fixed]
    for k in kw:
        if k not in known:
            raise UnknownNameError(f"option of backbone {name!r}", k, known,
                                   "build_backbone takes num_classes, in_channels, image_size and head for it")
    _check_callable(name, fn, num_classes, in_channels, image_size, kw)
    with float32_default():  # a caller's torch.set_default_dtype(torch.float64) would build float64 weights
        net = fn(num_classes, in_channels=in_channels, image_size=image_size, **kw)
        _check_built(name, net, num_classes, in_channels, image_size)
        if not is_built_in(name):
            _check_runs(name, net, in_channels, image_size)
        if head != "linear":
            net.reset_classifier(num_classes, head)
    return net


def known_outputs(net: UnitNet) -> int | None:
    """``net.num_classes``, or ``None`` where it takes a forward the network cannot run (a head
    without ``out_features`` on a network that declares no ``input_shape``)."""
    try:
        return net.num_classes
    except (TransferkitError, RuntimeError):
        return None


def _check_callable(name: str, fn, num_classes: int, in_channels: int, image_size, kw: dict) -> None:
    """Refuse a builder (a plugin's) whose signature does not take what :func:`build_backbone`
    calls it with, naming it, before its own ``TypeError``."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read (a builtin): its call says
        return
    try:
        signature.bind(num_classes, in_channels=in_channels, image_size=image_size, **kw)
    except TypeError as e:
        raise TransferkitError(f"backbone builder {name!r} has the signature {signature}, which cannot take how "
                               f"transferkit calls it ({e}): give it the signature (num_classes, in_channels=1, "
                               f"image_size=28, ...) and build the network for them (the source's classes, the "
                               f"config's channels and image size)") from None


def _check_built(name: str, net, num_classes: int, in_channels: int, image_size) -> None:
    """Refuse what a builder (a plugin's) returns when it is no UnitNet, or ignores the arguments
    it was given: another number of outputs, or (when the network declares its ``input_shape``)
    other input channels. Another image size is left to :func:`_check_runs` (a network that pools
    globally takes other sizes; ``from_modules`` declares 224 x 224 unless told)."""
    check(isinstance(net, UnitNet), f"backbone builder {name!r} returned a {type(net).__name__}, not a transferkit "
                                    f"UnitNet: return one (from_modules / from_sequential cut a module into units)")
    outputs = known_outputs(net)
    check(outputs in (None, num_classes), f"backbone builder {name!r} returned a network with {outputs} outputs for "
                                  f"num_classes={num_classes}: give its head num_classes outputs (the builder "
                                  f"is called with the number of source classes)")
    channels = net.input_shape[0] if net.input_shape else in_channels
    check(channels == in_channels, f"backbone builder {name!r} returned a network for images of {channels} "
                                   f"channel(s) (its input_shape {net.input_shape}) for in_channels={in_channels}: "
                                   f"build it for the channels it is given (the config's channels)")


def _check_runs(name: str, net: UnitNet, in_channels: int, image_size) -> None:
    """Refuse a builder's network that fails on images of the ``input_shape`` it declares (e.g. a
    fully connected layer sized for 28-pixel images in a network built for ``image_size`` 32),
    or, where it declares none (or ``from_modules`` guessed one), on images of ``in_channels`` x
    ``image_size`` x ``image_size``, the images it is built for: its jobs would each fail on a shape
    error. One forward of two blank images in eval mode, the random state kept; a network with
    lazy parameters is left to the engine."""
    shape, what = net.input_shape, "the images it declares (input_shape"
    if shape is None or getattr(net, "input_shape_guessed", False):
        if not is_whole(image_size):
            return
        shape, what = (in_channels, image_size, image_size), "the images it is built for (it declares no input_shape:"
    if any(nn.parameter.is_lazy(p) for p in net.parameters()):
        return
    ref = next((t for t in [*net.parameters(), *net.buffers()] if t.is_floating_point()), torch.zeros(()))
    try:
        with torch.random.fork_rng(devices=[]), evaluating(net), torch.no_grad():
            net(torch.zeros(2, *shape, dtype=ref.dtype, device=ref.device))
    except Exception as e:  # noqa: BLE001 -- whatever the user's module raises on the shape
        raise TransferkitError(f"backbone builder {name!r} returned a network that fails on {what} "
                               f"{tuple(shape)}; the builder was given image_size={image_size}): "
                               f"{first_line(e)}. Build it for the image_size it is given (e.g. size its first "
                               f"fully connected layer from image_size), or set image_size to the size it takes"
                               ) from None


