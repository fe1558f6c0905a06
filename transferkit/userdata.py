"""Bring your own data: image folders, ``.npz`` arrays and torchvision datasets as Domains."""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import hashlib
import json
import os
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import torch

from .domain import DARK_UINT8, RANGE_TOL, Domain, loose_name, name_text
from .errors import TransferkitError, UnknownNameError, check, first_named, warn
from .evaluate import chunk_rows
from .io import atomic_write, cache_dir, cache_lock, relative_hint
from .runtime import NoBar, shows_progress

#: set while a caller converts what it reads to the channels it chose (data.channels_chosen): no grey-in-RGB warning
CHANNELS_CHOSEN: contextvars.ContextVar[bool] = contextvars.ContextVar("transferkit_channels_chosen", default=False)
#: the image files read, by suffix in any case (a GIF or multi-page TIFF gives its first frame): .jfif and
#: .jpe are JPEGs (a browser saves them so), .pbm/.pgm/.ppm/.pnm a scanner's or an old dataset's netpbm files
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jfif", ".jpe", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                  ".pbm", ".pgm", ".ppm", ".pnm"}


# ---- image folders -----------------------------------------------------------------------
DARK = DARK_UINT8 / 255  # a 12-bit image in a 16-bit file tops out here; 0/1 integer masks at 1/255


def _warn_if_dark(x: torch.Tensor, where: str, hint: str) -> None:
    """Warn when the brightest pixel of a whole domain is at most 16 of 255: its values were
    almost surely stored in a narrower range than the file's type (``hint`` says which)."""
    if x.numel() and float(x.max()) <= DARK + 1e-6:
        warn(f"{where}: no pixel of any image is brighter than {float(x.max()) * 255:.3g} of 255: the "
             f"images load almost black; {hint}")


def _skipped(part: str) -> bool:
    """A hidden file or folder, or macOS's ``__MACOSX`` folder of a zip file (its ``._x.jpg`` are not images)."""
    return part.startswith(".") or part == "__MACOSX"


#: files of other systems that are never data (Windows thumbnails and folder settings)
SYSTEM_FILES = {"thumbs.db", "desktop.ini"}


def _identity(path) -> tuple[int, int] | None:
    """A folder's identity on its file system (device, inode): one folder whatever link, case or
    Unicode form names it; None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _class_holding(path: str, class_ids: dict, root_id) -> str | None:
    """The class whose folder is ``path`` or holds it (up to the image folder ``root_id``), or None:
    a link out of one class folder may not lead into another's."""
    while True:
        ident = _identity(path)
        owner, parent = class_ids.get(ident), os.path.dirname(path)
        if owner is not None or ident == root_id or parent == path:
            return owner
        path = parent


def _image_files(folder: Path, root: Path, skipped: list[str], seen: dict | None = None,
                 class_ids: dict | None = None) -> list[Path]:
    """The image files below ``folder`` at any depth, sorted by their paths' NFC parts, following
    symbolic links to folders (each real folder once, in ``seen``, shared by the class folders of
    one folder: a link loop ends, and a folder two classes link to is refused); hidden files and
    folders and ``__MACOSX`` left out. ``class_ids``: the class folders by identity, which a link
    out of ``folder`` may not lead into (their images would get this class's label too). Other
    files (no image suffix, a broken link) are appended to ``skipped`` relative to ``root``."""
    found, seen, class_ids = [], {} if seen is None else seen, class_ids or {}
    label, root_id = class_ids.get(_identity(folder)), _identity(root)
    for here, dirs, names in os.walk(folder, followlinks=True):
        ident = _identity(here)
        owner = _class_holding(os.path.realpath(here), class_ids, root_id) if class_ids else None
        check(owner in (None, label), f"{str(Path(here))!r} is a link into class folder {owner!r} "
                                     f"({os.path.realpath(here)}): its images would carry two labels; remove the link")
        if ident in seen:
            check(seen[ident] == label, f"{str(Path(here))!r} is a folder that class {seen[ident]!r} reads too "
                                       f"({os.path.realpath(here)}, linked from both): its images would carry two "
                                       f"labels; remove one link")
            dirs[:] = []
            continue
        seen[ident] = label
        dirs[:] = sorted(d for d in dirs if not _skipped(d))
        for name in names:
            path = Path(here) / name
            if class_ids and os.path.islink(path):  # a file linked from another class folder: two labels
                into = _class_holding(os.path.dirname(os.path.realpath(path)), class_ids, root_id)
                check(into in (None, label), f"{str(path)!r} is a link to a file of class folder {into!r} "
                                             f"({os.path.realpath(path)}): its image would carry two labels; "
                                             f"remove the link")
            _sort_file(path, root, found, skipped)
    return sorted(found, key=lambda p: tuple(unicodedata.normalize("NFC", part)  # one order on every system
                                             for part in p.relative_to(folder).parts))


#: photos Pillow does not decode without a plug-in (an iPhone's): named apart among the skipped files
HEIF_SUFFIXES = (".heic", ".heif")


def _heif_hint(files: list[str]) -> str:
    """``"; N of them are HEIC / HEIF photos ..."`` with what to do, or "" when ``files`` holds none."""
    heif = sum(Path(f).suffix.lower() in HEIF_SUFFIXES for f in files)
    return (f"; {heif} of them {'is a' if heif == 1 else 'are'} HEIC / HEIF photo{'' if heif == 1 else 's'} (an "
            f"iPhone's), which transferkit does not read: convert them to JPEG or PNG (e.g. with pillow-heif "
            f"installed, `pip install pillow-heif`: pillow_heif.register_heif_opener(), then Image.open(f).save("
            f"'x.jpg'))" if heif else "")


def _warn_skipped(root: Path, skipped: list[str]) -> None:
    if skipped:
        shown = first_named(map(repr, sorted(skipped)))
        warn(f"image folder {str(root)!r}: skipped {len(skipped)} file(s) that are not images by their name "
             f"({shown}){_heif_hint(skipped)}; images need one of the suffixes {', '.join(sorted(IMAGE_SUFFIXES))}")


def _top_files(root: Path, skipped: list[str]) -> list[Path]:
    """The image files directly in ``root``, beside its class folders (they belong to no class);
    its other files go to ``skipped`` as :func:`_image_files` counts them (hidden and system files left out)."""
    loose: list[Path] = []
    for p in sorted(root.iterdir()):
        if not p.is_dir():
            _sort_file(p, root, loose, skipped)
    return loose


def _sort_file(p: Path, root: Path, found: list[Path], skipped: list[str]) -> None:
    """An image file to ``found``; another file (no image suffix, a broken link) to ``skipped``,
    relative to ``root``; hidden and system files to neither."""
    if _skipped(p.name) or p.name.lower() in SYSTEM_FILES:
        return
    if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
        try:
            p.relative_to(root).as_posix().encode("utf-8")
        except UnicodeEncodeError:
            raise TransferkitError(f"image file {str(p)!r} has a name that is not valid UTF-8 (e.g. from an old "
                                   f"archive); rename it: file names key the folder's splits and label "
                                   f"subsets") from None
        found.append(p)
    else:
        skipped.append(str(p.relative_to(root)) + ("" if p.exists() else " (a broken link)"))


def _class_files(root: Path) -> tuple[list[str], list[tuple[Path, int, str | None]]]:
    classes = sorted((p.name for p in root.iterdir() if p.is_dir() and not _skipped(p.name)),
                     key=lambda n: unicodedata.normalize("NFC", n))  # ids in one order whatever the form
    skipped: list[str] = []
    loose = _top_files(root, skipped)
    for name in classes:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise TransferkitError(f"class folder {str(root / name)!r} has a name that is not valid UTF-8 (e.g. "
                                   f"from an old archive); rename it: class names go into results and "
                                   f"figures") from None
    check(len(classes) > 0, f"image folder {str(root)!r} has no class sub-folders"
                            f"{f' ({len(loose)} image file(s) lie directly in it)' if loose else ''}; expected "
                            f"one sub-folder per class (e.g. {root}/cat/001.png); images without labels go in as "
                            f"the unlabelled target (`unlabeled: folder:PATH` in a config, "
                            f"load_domain(spec, labeled=False) in Python)")
    if set(classes) & {"train", "val", "valid", "validation", "test"} and len(classes) <= 3:
        warn(f"image folder {str(root)!r} has the sub-folders {classes}, read as classes (each sub-folder "
             f"of a class folder, with all the images below it, becomes one group, like the frames of a video); "
             f"for a dataset split into train/val/test folders give one of them, e.g. folder:{root / classes[0]}")
    by_loose_name: dict = {}
    for name in classes:  # a script's stray space or capital splits a class in two
        by_loose_name.setdefault(loose_name(name), []).append(name)
    alike = [names for names in by_loose_name.values() if len(names) > 1]
    if alike:
        warn(f"image folder {str(root)!r}: the class folders {', '.join(map(repr, alike[0]))} differ only in case or "
             f"surrounding spaces, and are read as {len(alike[0])} classes; rename them to one name if they are one "
             f"class")
    if len(classes) == 1:
        inner = sorted(p.name for p in (root / classes[0]).iterdir() if p.is_dir() and not _skipped(p.name))
        if len(inner) > 1:
            warn(f"image folder {str(root)!r} has one class folder {classes[0]!r}, whose sub-folders "
                 f"{first_named(inner)} are read as groups (videos) of that "
                 f"class; if they are the classes, give folder:{root / classes[0]}")
    class_ids: dict = {}
    for name in classes:
        ident = _identity(root / name)
        check(ident not in class_ids, f"class folders {name!r} and {class_ids.get(ident)!r} of {str(root)!r} are one "
                                      f"folder (a link: {os.path.realpath(root / name)}): its images would carry two "
                                      f"labels; remove the link")
        class_ids[ident] = name
    root_id = _identity(root)
    for name in classes:  # a class folder inside another's (a link): its images would be both classes'
        outer = _class_holding(os.path.dirname(os.path.realpath(root / name)), class_ids, root_id)
        check(outer is None, f"class folder {name!r} of {str(root)!r} lies inside class folder {outer!r} (a link: "
                             f"{os.path.realpath(root / name)}): its images would carry two labels; remove the link")
    files, empty, seen = [], [], {}
    for label, name in enumerate(classes):
        found = _image_files(root / name, root, skipped, seen, class_ids)
        if not found:
            empty.append(str(root / name))
        for p in found:
            rel = p.relative_to(root / name)
            files.append((p, label, (Path(name) / rel.parts[0]).as_posix() if len(rel.parts) > 1 else None))
    if empty:
        which = (f"class folder {empty[0]!r} contains" if len(empty) == 1 else
                 f"{len(empty)} class folders contain")
        listed = f": {', '.join(map(repr, empty[:10]))}" if len(empty) > 1 else ""
        inside = sorted(f for f in skipped if any(Path(root, f).is_relative_to(folder) for folder in empty))
        held = (f"; {'it holds' if len(empty) == 1 else 'they hold'} {len(inside)} file(s) of other kinds: "
                f"{first_named(map(repr, inside))}{_heif_hint(inside)}"
                if inside else "")
        raise TransferkitError(f"{which} no images ({', '.join(sorted(IMAGE_SUFFIXES))}){listed}{held}; add images "
                               f"or remove the folder (a class without images could never be learnt; class ids are "
                               f"the positions of the sorted folder names)")
    _warn_skipped(root, skipped)
    if loose:
        one, shown = len(loose) == 1, first_named(repr(p.name) for p in loose)
        warn(f"image folder {str(root)!r}: {len(loose)} image file{' lies' if one else 's lie'} outside any class "
             f"folder (directly in it: {shown}) "
             f"and {'is' if one else 'are'} not read: put {'it' if one else 'them'} in a class folder, or read the "
             f"folder as unlabelled images (`unlabeled: folder:{root}` in a config, load_domain(spec, labeled=False) "
             f"in Python)")
    nested = sum(g is not None for _, _, g in files)
    if 0 < nested < len(files):
        warn(f"image folder {str(root)!r}: {nested} image(s) lie in sub-folders of class folders and "
             f"{len(files) - nested} directly in them; each such sub-folder is one group (the frames of one video, "
             f"kept together by the splits), each image directly in a class folder a group of its own: move the "
             f"images into one level if they are not frames of videos")
    return classes, files


def _on_white(im, grey: bool = False):
    """An image with transparency composited onto white, as a viewer shows it (a dropped
    alpha keeps the colour stored under transparent pixels, often black: a black sketch on a
    transparent background became a black square). Grey stays grey (``grey``: an image stored
    as grey that Pillow opens as colour)."""
    from PIL import Image

    rgba = im.convert("RGBA")
    out = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return out.convert("L") if grey or im.mode in ("1", "L", "LA") else out


def _read_image(path: Path, size: int | None, mode: str | None):
    return _decode_image(path, size, mode)[0]


def _decode_image(path: Path, size: int | None, mode: str | None) -> tuple[np.ndarray, tuple[int, int]]:
    """``H x W x C`` uint8 pixels of one file and its width and height before resizing."""
    from PIL import Image, ImageOps

    try:
        with contextlib.nullcontext(path) if isinstance(path, Image.Image) else Image.open(path) as im:
            # a 16-bit grey+alpha PNG, which Pillow opens as RGBA
            grey_alpha = any(t[3] == "LA;16B" for t in getattr(im, "tile", ()))
            im.load()
            check(im.width > 0 and im.height > 0, f"it has no pixels ({im.width} x {im.height})")
            im = ImageOps.exif_transpose(im)  # as a viewer shows it (a phone's Orientation tag)
            palette = im.mode in ("P", "PA")
            if im.mode in ("RGBA", "LA", "PA") or (im.mode in ("1", "L", "RGB", "P") and "transparency" in im.info):
                im = _on_white(im, grey_alpha)
            if im.mode.startswith("I;16") or im.mode in ("I", "F"):  # convert() would clip them at 255
                a = np.asarray(im, dtype=np.float64)  # integers: 16-bit grey; floats: [0, 1] (one rule for all files)
                if im.mode == "F":
                    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
                    check(bool(np.isfinite(a).all()) and lo >= -RANGE_TOL and hi <= 1 + RANGE_TOL,
                          f"a 32-bit float image is read as values in [0, 1]; this one holds "
                          f"{'NaN or infinite values' if not np.isfinite(a).all() else f'{lo:g}..{hi:g}'} "
                          f"(rescale it to [0, 1], or save it as 8- or 16-bit integers)")
                if im.mode == "I" and a.size and (a.min() < 0 or a.max() > 65535):
                    raise TransferkitError(f"a 32-bit integer image is read as 16-bit grey (0..65535); this one "
                                           f"holds {int(a.min())}..{int(a.max())} (rescale it to 0..65535 or 0..255)")
                top = 1.0 if im.mode == "F" else 65535.0
                if im.mode != "F" and "transparency" in im.info:  # a 16-bit grey PNG's tRNS value: on white
                    a[a == im.info["transparency"]] = top
                im = Image.fromarray(np.clip(np.round(a / top * 255), 0, 255).astype(np.uint8))
            if palette:  # a palette is an encoding: grey when every colour of the image is
                im = im.convert("RGB")
                a = np.asarray(im)
                if (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all():
                    im = im.convert("L")  # exact for equal channels
            if mode is None:
                mode = "L" if im.mode in ("1", "L", "LA", "F") else "RGB"
            im = im.convert(mode)
            native = im.size
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for corrupt files
        raise TransferkitError(f"cannot read image file {str(path)!r}: {_why_unreadable(path, e)}") from None
    return (arr if arr.ndim == 3 else arr[:, :, None]), native


def _why_unreadable(path, e: Exception) -> str:
    """Pillow's error for a file it cannot decode, said plainly when the file is empty, cut short
    or text (a web page saved under an image name)."""
    if isinstance(e, TransferkitError) or not isinstance(path, (str, os.PathLike)):
        return str(e)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return str(e)
    if not head:
        return "it is empty (0 bytes: an interrupted copy or download?)"
    if "truncated" in str(e).lower():
        return f"{e}: the file is cut short (an interrupted copy or download?)"
    if head.lstrip().startswith(b"<"):
        return "it holds text, not an image (a web page saved under an image name?)"
    return str(e)


def _check_size_channels(size, channels) -> None:
    check(size is None or (isinstance(size, int) and not isinstance(size, bool) and size >= 1),
          f"size must be a positive int or None, got {size!r}")
    check(channels in (None, 1, 3), f"channels must be 1, 3 or None, got {channels!r}")


#: a folder of at least this many files shows a progress bar while it is decoded (runtime.shows_progress)
PROGRESS_FROM = 1000
_progress: list = [None]  # None: a bar when runtime.shows_progress(); see reading_progress


@contextlib.contextmanager
def reading_progress(show: bool | None):
    """Within it, decoding a large folder shows a tqdm bar when ``show`` (None: when stderr is a
    terminal or in a Jupyter kernel, as the engine's training bar): off in worker processes, which
    read the data again."""
    before, _progress[0] = _progress[0], show
    try:
        yield
    finally:
        _progress[0] = before


def _with_progress(paths: list, where: str):
    from tqdm import tqdm

    show = (shows_progress() if _progress[0] is None else _progress[0]) and len(paths) >= PROGRESS_FROM
    return tqdm(paths, desc=f"reading {len(paths)} images {where}", unit="image", leave=False) if show \
        else NoBar(paths)


def _read_images(paths: list[Path], size: int | None, channels: int | None, where: str) -> torch.Tensor:
    """``N x C x H x W`` floats in [0, 1] from image files, every unreadable file named at once,
    with the warnings of their decoding (:func:`_warn_decoded`)."""
    x, facts = _decode_images(paths, size, channels, where)
    _warn_decoded(len(paths), size, where, facts)
    return x


def _decode_images(paths: list[Path], size: int | None, channels: int | None,
                   where: str) -> tuple[torch.Tensor, dict]:
    """:func:`_read_images` without its warnings: the pixels and the facts the warnings need
    (``stretched``: how many images were not square before resizing to ``size``; ``grey``: colour
    files of grey content, channels chosen from the files). The result is allocated once and filled
    file by file (no stack of all the files' pixels; reallocated once as RGB when a colour file
    follows grey ones)."""
    mode = {1: "L", 3: "RGB", None: None}[channels]
    x, first, other, unreadable, stretched = None, None, None, [], 0
    for i, p in enumerate(_with_progress(paths, where)):
        try:
            a, (w, h) = _decode_image(p, size, mode)
        except TransferkitError as e:
            unreadable.append(str(e))
            continue
        stretched += size is not None and w != h
        if x is None:
            first, x = (p, a.shape), torch.empty(len(paths), a.shape[2], a.shape[0], a.shape[1])
        if a.shape[:2] != first[1][:2]:
            other = other or (p, a.shape)
            continue
        if a.shape[2] > x.shape[1]:  # colour after grey files (channels None): every image becomes RGB
            x = x.expand(-1, 3, -1, -1).contiguous()
        x[i].numpy()[...] = a.transpose(2, 0, 1)  # as float32; grey into RGB repeats it
    if len(unreadable) == 1:
        raise TransferkitError(f"{unreadable[0]} (repair or remove it)")
    check(not unreadable, f"{len(unreadable)} of the {len(paths)} image files {where} cannot be read "
                          f"(repair or remove them):\n  " + "\n  ".join(unreadable[:20])
                          + (f"\n  ... and {len(unreadable) - 20} more" if len(unreadable) > 20 else ""))
    if other is not None:
        (p0, s0), (p, s) = first, other
        raise TransferkitError(
            f"images {where} have different sizes: {str(p0)!r} is {s0[1]}x{s0[0]} but "
            f"{str(p)!r} is {s[1]}x{s[0]}; pass a size to resize them (size=28 in Python, "
            f"--size 28 for transferkit show)")
    grey = channels is None and x.shape[1] == 3 and all(  # whether or not the caller chose: the cache keeps it
        bool((c[:, 0] == c[:, 1]).all() and (c[:, 1] == c[:, 2]).all()) for c in x.split(chunk_rows(x)))
    return x.div_(255), {"stretched": int(stretched), "grey": bool(grey)}


def _warn_decoded(n: int, size: int | None, where: str, facts: dict) -> None:
    """The warnings of decoding ``n`` images (:func:`_decode_images`'s ``facts``), given on a
    cache hit as on the first read."""
    stretched = facts["stretched"]
    if stretched:
        warn(f"{stretched} of the {n} images {where} {'is' if stretched == 1 else 'are'} not square; "
             f"{'it is' if stretched == 1 else 'they are'} stretched to {size}x{size} (crop or pad them to squares "
             f"first to keep their proportions)")
    if facts["grey"] and not CHANNELS_CHOSEN.get():
        warn(f"the {n} images {where} are grey in content, but some files are stored in colour (RGB, "
             f"e.g. JPEGs saved so): they are read as 3 equal channels, and a run then reads both its domains in "
             f"colour; give channels=1 (a config's channels: 1) to read them as grey")


def read_images(paths, size: int | None = None, channels: int | None = None) -> torch.Tensor:
    """Image files (a path or a list of paths; PIL images too) as an ``N x C x H x W`` float tensor in [0, 1],
    read as ``load_domain("folder:...", size=, channels=)`` reads them (orientation,
    transparency on white, 16-bit grey): new images for a fitted model's ``predict``. Files,
    not a folder: a folder of class folders is ``load_domain("folder:PATH")``.
    ``size`` resizes to ``size x size`` (needed when the files differ in size); ``channels``
    1 or 3 converts every image with PIL (None: grey if every file is grey, otherwise RGB).
    Give the size and channels the model was fitted on. (``transferkit run`` converts colour
    to grey after loading, in floats: those pixels can differ by up to 0.5 / 255.)"""
    from PIL import Image

    paths = [paths] if isinstance(paths, (str, os.PathLike, Image.Image)) else list(paths)
    check(len(paths) > 0, "read_images needs one or more image files, got none")
    other = next((p for p in paths if not isinstance(p, (str, os.PathLike, Image.Image))), None)
    check(other is None, f"read_images takes image file paths or PIL images, got {type(other).__name__}"
                         + (": arrays and tensors go to predict as they are (N x C x H x W in [0, 1])"
                            if hasattr(other, "shape") else ""))
    images = {i: p for i, p in enumerate(paths) if isinstance(p, Image.Image)}  # read as files are
    paths = [Path(p).expanduser() for p in paths if not isinstance(p, Image.Image)]
    folder = next((str(p) for p in paths if p.is_dir()), None)
    if folder is not None:
        raise TransferkitError(f"read_images takes image file paths, not a folder ({folder!r}): read a folder of "
                               f"class folders with load_domain('folder:{folder}'), or list its files, "
                               f"read_images(sorted(glob.glob('{folder}/*.png')))")
    missing = [str(p) for p in paths if not p.is_file()]
    check(not missing, f"read_images: {len(missing)} of the files do not exist or are not files: "
                       f"{', '.join(map(repr, missing[:10]))}")
    _check_size_channels(size, channels)
    for i, im in images.items():
        paths.insert(i, im)
    return _read_images(paths, size, channels, "given")


def path_keys(names) -> torch.Tensor:
    """An int64 key per name: the first 8 bytes of the SHA-256 of its NFC UTF-8 form, read as a
    little-endian signed integer. Fixed across versions, so a file keeps its split."""
    return torch.tensor([int.from_bytes(hashlib.sha256(unicodedata.normalize("NFC", n).encode()).digest()[:8],
                                        "little", signed=True) for n in names], dtype=torch.int64)


def load_image_folder(path: str | os.PathLike, size: int | None = None,
                      channels: int | None = None) -> Domain:
    """A domain from ``path/<class>/<image>`` (PNG, JPEG, BMP, GIF, TIFF, WebP, netpbm:
    :data:`IMAGE_SUFFIXES`; class names = sorted sub-folder names). ``channels`` 1 or 3
    converts every image; ``None`` keeps grayscale if all images are grayscale, otherwise RGB.
    Images of different sizes need ``size`` (they are resized to ``size x size``). All images
    below a sub-folder of a class folder (``cat/video7/f.png``, ``cat/video7/cam2/f.png``)
    share one group id (frames of one video); images directly in
    the class folder get a group each. Image files directly in ``path``, beside the class folders,
    are in no class: a warning counts and names them.
    Grey images of integers wider than 8 bits (PIL modes ``I;16``, ``I``) are read as 16-bit
    (0-65535), float images (``F``) as values in [0, 1]. A folder whose brightest pixel is at most
    16 of 255 warns (12-bit images saved in 16-bit files, 0/1 masks)."""
    root = _folder(path)
    _check_size_channels(size, channels)
    classes, files = _class_files(root)
    paths = [p for p, _, _ in files]
    x = _folder_pixels(root, paths, size, channels)
    y = torch.tensor([label for _, label, _ in files])
    group_of = [g if g is not None else str(p) for p, _, g in files]
    groups = None
    if any(g is not None for _, _, g in files):
        ids = {k: i for i, k in enumerate(dict.fromkeys(group_of))}
        groups = torch.tensor([ids[k] for k in group_of])
    return Domain(root.name or str(root), x.contiguous(), y, classes, groups,
                  {"origin": f"folder:{root}", "files": len(files)}, keys=folder_keys(root, files))


def folder_keys(root: Path, files: list[tuple]) -> torch.Tensor:
    """The keys of a folder's ``(path, label, group)`` files (:func:`_class_files`): :func:`path_keys`
    of their paths below ``root``, by which the split and the label subsets place each file; a
    video's frames take the key of its sub-folder's path (frames added or removed move no video)."""
    return path_keys(group if group is not None else p.relative_to(root).as_posix() for p, _, group in files)


def _folder_pixels(root: Path, paths: list[Path], size: int | None, channels: int | None) -> torch.Tensor:
    """:func:`decoded_images` of a folder's files, warned of when they load almost black."""
    x = decoded_images(root, paths, size, channels)
    _warn_if_dark(x, f"image folder {str(root)!r}", NARROW_FILES)
    return x


#: why a folder's images load almost black, and what to do
NARROW_FILES = ("16-bit files are read as 0-65535, so 12- or 10-bit images (0-4095, 0-1023) and masks of 0/1 must be "
                "rescaled to the file's full range before loading")


#: folders of at least this many files keep their decoded pixels in the cache (``folders/``)
CACHED_FOLDER_FILES = 1000

#: the functions whose code decides what a folder's files decode to (:func:`_decoding_digest`)
_DECODING = (_on_white, _decode_image, _decode_images, _check_size_channels)


def folder_cache_on() -> bool:
    """Whether ``$TRANSFERKIT_FOLDER_CACHE`` leaves the folder cache on (off: ``0``, ``false``,
    ``off``, ``no``, in any case; a value that is neither warns and leaves it on)."""
    value = os.environ.get("TRANSFERKIT_FOLDER_CACHE", "1").strip().lower()
    if value in ("0", "false", "off", "no"):
        return False
    if value not in ("1", "true", "on", "yes", ""):
        warn(f"TRANSFERKIT_FOLDER_CACHE={value!r} is read as on; 0, false, off or no turns the folder cache off")
    return True


def decoded_images(root: Path, files: list[Path], size: int | None, channels: int | None) -> torch.Tensor:
    """:func:`_read_images` of a folder's ``files``; for a folder of :data:`CACHED_FOLDER_FILES` or
    more, its pixels are kept as uint8 in ``cache_dir()/folders/`` (every decoded pixel is a
    whole number of 255ths, so a cache hit is bit-identical), keyed on the files' relative paths
    and contents (a hash of their bytes: reading them costs a fraction of decoding them, and an
    edit that keeps a file's size and time is seen), ``size``, ``channels`` and Pillow's version:
    a second run, and a copy of the folder elsewhere, skip the decoding.
    ``TRANSFERKIT_FOLDER_CACHE=0`` (or ``false``, ``off``, ``no``) turns it off. The entry keeps
    what the decoding's warnings need (how many images were stretched, whether colour files are
    grey in content), so a cache hit gives them as the first read did (until 2026-12-02 a hit gave
    none; an entry of then, without them, is not read: the key changed, so the folder is decoded once more).
    Since 2026-12-07 the key holds the decoding code too (:func:`_decoding_digest`): a change of what a
    file decodes to, or refuses, decodes the folder again."""
    where = f"in {str(root)!r}"
    if len(files) < CACHED_FOLDER_FILES or not folder_cache_on():
        return _read_images(files, size, channels, where)
    import PIL

    contents = [(unicodedata.normalize("NFC", p.relative_to(root).as_posix()),
                 hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest()) for p in files]
    key = hashlib.sha256(json.dumps({"format": 3, "size": size, "channels": channels, "pillow": PIL.__version__,
                                     "code": _decoding_digest(), "files": contents}).encode()).hexdigest()[:24]
    path = cache_dir() / "folders" / f"{key}.npz"
    if (hit := _cached_folder(path, len(files), size, where)) is not None:
        return hit
    with cache_lock(path, f"decodes the image folder {str(root)!r}"):  # one process decodes a new folder
        if (hit := _cached_folder(path, len(files), size, where)) is not None:  # decoded by the one it waited for
            return hit
        x, facts = _decode_images(files, size, channels, where)
        _warn_decoded(len(files), size, where, facts)
        try:
            def write(tmp: Path) -> None:
                pixels = torch.empty(x.shape, dtype=torch.uint8)
                rows = chunk_rows(x)  # no float copy of the whole folder (a chunk of 12 MB of floats)
                for part, out in zip(x.split(rows), pixels.split(rows)):
                    out.copy_(part.mul(255).round_())
                with open(tmp, "wb") as f:
                    np.savez(f, x=pixels.numpy(), stretched=np.int64(facts["stretched"]),
                             grey=np.bool_(facts["grey"]))
            atomic_write(path, write)
        except OSError as e:  # a read-only cache costs the speed-up, not the run
            warn(f"image folder {str(root)!r}: its decoded pixels are not cached ({e})")
    return x


@functools.cache
def _decoding_digest() -> str:
    """A digest of the code that decodes a folder's files (the functions that read, convert,
    check and resize them, as this module defines them: not a stand-in put in their place), or
    of transferkit's version where their source cannot be read; computed once."""
    import inspect

    from . import __version__
    try:
        text = "".join(inspect.getsource(f) for f in _DECODING)
    except (OSError, TypeError):
        text = __version__
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cached_folder(path: Path, n: int, size, where: str) -> torch.Tensor | None:
    """The folder's pixels from the cache file ``path`` (with the warnings its decoding gave), or
    ``None`` when it is missing, truncated, foreign or without the warnings' facts."""
    try:
        with np.load(path, allow_pickle=False) as z:
            pixels, facts = z["x"], {"stretched": int(z["stretched"]), "grey": bool(z["grey"])}
    except Exception:
        return None
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or len(pixels) != n:
        return None
    _warn_decoded(n, size, where, facts)
    return torch.from_numpy(pixels).float().div_(255)


def _folder(path) -> Path:
    root = Path(path).expanduser()
    check(not (root.is_file() and root.suffix.lower() == ".npz"),
          f"image folder {str(root)!r} is an .npz file: give it as npz:{path}")
    check(not (root.is_file() and zipfile.is_zipfile(root)),
          f"image folder {str(root)!r} is a zip archive: unzip it and give the folder it holds")
    check(not root.is_file(), f"image folder {str(root)!r} is a file, not a folder: folder: takes a folder of class "
                              f"sub-folders of images (npz:PATH a numpy archive; read_images reads image files)")
    check(root.is_dir(), f"image folder {str(root)!r} does not exist or is not a directory{relative_hint(root)}")
    return root


def load_unlabeled_folder(path: str | os.PathLike, size: int | None = None,
                          channels: int | None = None) -> Domain:
    """:meth:`Domain.unlabeled` images from every image file below ``path``, at any depth
    (flat, or in class folders whose names are not read), read as :func:`load_image_folder`
    reads them; hidden files and folders (``.DS_Store``, ``__MACOSX/._x.jpg``) are skipped."""
    root = _folder(path)
    _check_size_channels(size, channels)
    skipped: list[str] = []
    files = _image_files(root, root, skipped)
    _warn_skipped(root, skipped)
    check(len(files) > 0, f"image folder {str(root)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}) at "
                          f"any depth")
    x = _folder_pixels(root, files, size, channels)
    return Domain.unlabeled(root.name or str(root), x.contiguous(),
                            provenance={"origin": f"folder:{root}", "files": len(files)})


# ---- npz arrays -------------------------------------------------------------------------------
def _images_nchw(x: np.ndarray, where: str) -> np.ndarray:
    check(x.ndim in (3, 4), f"{where}: 'x' must be N x H x W, N x H x W x C or N x C x H x W, "
                            f"got shape {x.shape}")
    if x.ndim == 3:
        return x[:, None]
    if x.shape[1] in (1, 3, 4) and not (x.shape[-1] in (1, 3, 4) and x.shape[1] > x.shape[-1]):
        return x[:, :3] if x.shape[1] == 4 else x
    check(x.shape[-1] in (1, 3, 4), f"{where}: cannot tell the channel axis of 'x' with shape "
                                    f"{x.shape}; use 1, 3 or 4 channels")
    return np.moveaxis(x[..., :3], -1, 1)


#: images converted to float at a time by the npz loader (about 64 MB of float32 a chunk)
CHUNK_BYTES = 64 << 20


def _images_float(x: np.ndarray, where: str) -> torch.Tensor:
    """``x`` (``N x C x H x W``, any strides) as a new contiguous float32 tensor in [0, 1], allocated
    once and converted a chunk of images at a time (a whole-array conversion held two float copies)."""
    chunk = max(1, CHUNK_BYTES // max(1, 4 * int(np.prod(x.shape[1:]))))
    parts = range(0, len(x), chunk)
    if x.dtype.kind in "iu":
        if x.size:
            check(x.min() >= 0 and x.max() <= 255, f"{where}: integer images must be in 0..255 "
                                                   f"(found {x.min()}..{x.max()})")
    elif x.dtype != np.bool_:
        check(x.dtype.kind == "f", f"{where}: 'x' must be uint8 or float, got dtype {x.dtype}")
        check(all(np.isfinite(x[i:i + chunk]).all() for i in parts), f"{where}: 'x' contains NaN or infinite values")
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        check(lo >= -1e-3 and hi <= 1 + 1e-3, f"{where}: float images must be in [0, 1] (found "
                                              f"{lo:.3g}..{hi:.3g}); divide by their full range (255 for 8-bit pixels"
                                              f"{'' if round(hi) == 255 else ', %.3g if it is their maximum' % hi}) "
                                              f"or store uint8 0..255")
    out = torch.empty(x.shape, dtype=torch.float32)
    o = out.numpy()
    for i in parts:
        part = o[i:i + chunk]
        part[...] = np.clip(x[i:i + chunk], 0, 1) if x.dtype.kind == "f" else x[i:i + chunk]
        if x.dtype.kind in "iu":
            part /= 255
    return out


def _int_vector(a: np.ndarray, key: str, n: int, where: str) -> torch.Tensor:
    check(a.ndim == 1, f"{where}: {key!r} must be 1-D, got shape {a.shape}")
    check(len(a) == n, f"{where}: {key!r} has {len(a)} entries but 'x' has {n} images")
    check(a.dtype.kind != "f" or bool(np.isfinite(a).all()), f"{where}: {key!r} contains NaN or infinite values")
    if a.dtype.kind == "f" and a.size and np.all(a == np.round(a)):
        a = a.astype(np.int64)
    check(a.dtype.kind not in "USO" or key != "y",
          f"{where}: 'y' must hold integers (class ids), got dtype {a.dtype} (class names?): turn the names into ids "
          f"with names, y = np.unique(y, return_inverse=True) and save both: np.savez(path, x=x, y=y, "
          f"class_names=names)")
    check(a.dtype.kind in "iu", f"{where}: {key!r} must hold integers, got dtype {a.dtype}")
    if a.dtype.kind == "u" and a.size:  # uint64 above 2**63 - 1 would wrap to negative ids
        check(int(a.max()) <= np.iinfo(np.int64).max, f"{where}: {key!r} holds {int(a.max())}, beyond int64")
    return torch.from_numpy(a.astype(np.int64))


#: the keys load_npz reads, and names that mean one of them (a key close to one, by difflib, means it too)
NPZ_KEYS = ("x", "y", "class_names", "groups")
_NPZ_SYNONYMS = {"images": "x", "image": "x", "imgs": "x", "labels": "y", "label": "y", "targets": "y",
                 "target": "y", "classnames": "class_names", "names": "class_names"}
#: strings that pandas' ``.astype(str)`` writes for a missing id
_MISSING_IDS = ("", "None", "nan", "NaN", "<NA>")


def _member(z, key: str, where: str) -> np.ndarray:
    """One array of an open ``.npz``: an object array (pandas ``.values``) is named with the cast that saves it."""
    try:
        return z[key]
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise TransferkitError(f"{where}: {key!r} cannot be read: {e}") from None
        cast = {"x": ".astype(np.float32) (values in [0, 1]) or .astype(np.uint8)", "y": ".astype(int)"}.get(
            key, ".astype(str)")
        raise TransferkitError(f"{where}: {key!r} is an object array (e.g. pandas .values), which is not loaded "
                               f"(it would need pickle); save it as {key}=values{cast}") from None


def _meant(key: str) -> str | None:
    """The key of :data:`NPZ_KEYS` that an unknown ``key`` most likely means, or None."""
    low = key.lower()
    if "group" in low or "video" in low or low.startswith("vid"):
        return "groups"
    close = difflib.get_close_matches(low, NPZ_KEYS, n=1, cutoff=0.7)
    return _NPZ_SYNONYMS.get(low) or (close[0] if close else None)


def _check_keys(data: dict, where: str) -> None:
    """Refuse a key that means ``groups`` when the file lacks it (``group``, ``video_ids``: frames of
    one video would silently fall into train and test); warn about the other unknown keys, with
    the known key one looks like (``labels``: ``y``)."""
    unknown = [k for k in data if k not in NPZ_KEYS]
    read = ", ".join(NPZ_KEYS)
    for k in unknown:
        check(_meant(k) != "groups" or "groups" in data, f"{where}: key {k!r} is not read (the keys read are "
                                                          f"{read}); did you mean 'groups'? save it as groups=...")
    if unknown:
        meant = [f"{k!r} ({_meant(k)}?)" if _meant(k) and _meant(k) not in data else repr(k) for k in unknown]
        warn(f"{where}: key(s) {', '.join(meant)} are ignored; the keys read are {read}")


def _group_ids(a: np.ndarray, n: int, where: str):
    """``groups`` of an ``.npz``: names (video ids such as ``"v1"``, numbered by Domain) or integer
    ids; an ``N x 1`` column (a DataFrame's ``.values``) or ``1 x N`` row is taken as a vector."""
    if a.ndim > 1 and a.size == n and max(a.shape) == n:
        a = a.reshape(-1)
    if a.dtype.kind == "S":  # bytes, as numpy.array([b"v1", ...]) stores them
        a = np.char.decode(a, "utf-8", errors="replace")
    if a.dtype.kind != "U":
        return _int_vector(a, "groups", n, where)
    check(a.ndim == 1, f"{where}: 'groups' must be 1-D (or N x 1), got shape {a.shape}")
    check(len(a) == n, f"{where}: 'groups' has {len(a)} entries but 'x' has {n} images")
    missing = int(np.isin(a, _MISSING_IDS).sum())
    check(not missing, f"{where}: {missing} of the {n} 'groups' ids are missing (empty, 'None' or 'nan', as "
                       f"pandas' .astype(str) writes a missing value); give every image an id")
    return a.tolist()


def _npz_images(a: np.ndarray, where: str) -> torch.Tensor:
    x = _images_float(_images_nchw(a, where), where)
    if a.dtype.kind in "iu":
        _warn_if_dark(x, where, "integer images are read as 0..255: multiply 0/1 masks by 255, or store "
                      "float images in [0, 1]")
    check(x.shape[0] > 0, f"{where} holds no images ('x' is empty)")
    check(x.shape[2] > 0 and x.shape[3] > 0, f"{where}: the images are {x.shape[2]} x {x.shape[3]} pixels")
    return x


def load_npz(path: str | os.PathLike, labeled: bool = True) -> Domain:
    """A domain from an ``.npz`` file with ``x`` (N x H x W, N x H x W x C or N x C x H x W;
    uint8 0..255 or float 0..1; an alpha channel is dropped), ``y`` (N integer labels >= 0),
    with ``labeled=False`` :meth:`Domain.unlabeled` images from ``x`` alone (other keys unread),
    optional ``class_names`` (one per label id; default ``"0"``, ``"1"``, ...) and optional
    ``groups`` (N group ids: integers or names such as video ids; an N x 1 column is taken as
    a vector). Another key is ignored with a warning (naming a known key it looks like), and refused
    when it looks like ``groups`` and the file has none (``group``, ``video_ids``). Integer images
    whose brightest pixel is at most 16 warn (0/1 masks stored as integers)."""
    p = Path(path).expanduser()
    where = f"npz file {str(p)!r}"
    check(not p.is_dir(), f"{where} is a directory; an image folder loads as 'folder:{p}'")
    check(p.is_file(), f"{where} does not exist{relative_hint(p)}")
    check(p.suffix.lower() != ".npy", f"{where} is a single array (.npy); save x and y together with "
                                      f"numpy.savez(path, x=images, y=labels)")
    with open(p, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    check(zipped, f"{where} is not an .npz archive (numpy.savez writes a zip file; this one does not start as one)")
    try:
        with np.load(p, allow_pickle=False) as z:
            data = {k: _member(z, k, where) for k in z.files}
    except TransferkitError:
        raise
    except Exception as e:
        raise TransferkitError(f"{where} cannot be read as .npz: {e}") from None
    if not labeled:
        check("x" in data, f"{where} lacks key 'x' (the images); found {sorted(data)}")
        check(isinstance(data["x"], np.ndarray), f"{where}: member 'x' is not a NumPy array (.npy)")
        x = _npz_images(data["x"], where)
        return Domain.unlabeled(p.stem, x.contiguous(), provenance={"origin": f"npz:{p}"})
    _check_keys(data, where)
    missing = [k for k in ("x", "y") if k not in data]
    like = [f"{k!r} looks like {_meant(k)!r}: save it as {_meant(k)}=..." for k in data if _meant(k) in missing]
    check(not missing, f"{where} lacks key(s) {missing}; found {sorted(data)} (need 'x' and 'y')"
                       + (f"; {'; '.join(like)}" if like else "")
                       + ("; images without labels go in as the unlabelled target (`unlabeled: npz:PATH` in a "
                          "config, load_domain(spec, labeled=False) in Python)" if missing == ["y"] else ""))
    for k in ("x", "y"):
        check(isinstance(data[k], np.ndarray), f"{where}: member {k!r} is not a NumPy array (.npy); write the "
                                               f"file with numpy.savez(path, x=images, y=labels)")
    x = _npz_images(data["x"], where)
    n = x.shape[0]
    y = _int_vector(data["y"], "y", n, where)
    check(int(y.min()) >= 0, f"{where}: labels must be >= 0 (found {int(y.min())})")
    n_classes = int(y.max()) + 1
    if "class_names" in data:
        raw = np.asarray(data["class_names"]).reshape(-1)
        names = [name_text(s, where) for s in raw.tolist()]
        check(len(names) >= n_classes, f"{where}: {len(names)} class_names but labels go up to "
                                       f"{n_classes - 1}")
        check(len(set(names)) == len(names), f"{where}: class_names are not unique")
        empty = [names[i] for i in sorted(set(range(len(names))) - set(y.tolist()))]
        if empty:  # a head output no image trains; per-class accuracy None for it
            warn(f"{where}: no image has the class(es) {empty[:10]}{'...' if len(empty) > 10 else ''} of "
                 f"class_names; they stay classes with no image (leave them out with "
                 f"source_classes / target_classes)")
    else:
        check(n_classes <= n, f"{where}: labels go up to {n_classes - 1} for {n} images, so most classes "
                              f"would be empty; give 'class_names' or number the classes 0..C-1")
        names = [str(i) for i in range(n_classes)]
        empty = sorted(set(range(n_classes)) - set(y.tolist()))
        if empty:
            warn(f"{where}: no image has label(s) {empty[:10]}{'...' if len(empty) > 10 else ''}; "
                 f"without 'class_names' the classes are the ids 0..{n_classes - 1}, so "
                 f"{len(empty)} of them are empty (number the classes 0..C-1 or give class_names)")
    groups = None if data.get("groups") is None else _group_ids(data["groups"], n, where)
    numbered = {} if "class_names" in data else {"numbered_classes": True}  # warn_numbered_match reads it
    return Domain(p.stem, x.contiguous(), y, names, groups, {"origin": f"npz:{p}", **numbered})


# ---- torchvision --------------------------------------------------------------------------------
def load_torchvision(name: str, root: str | os.PathLike, train: bool = True) -> Domain:
    """MNIST, SVHN, USPS or CIFAR10 through torchvision (downloaded into ``root``). Needs the
    vision extra: ``pip install 'transferkit[vision]'``."""
    key = str(name).lower()
    if key not in ("cifar10", "mnist", "svhn", "usps"):  # named before torchvision is asked for
        raise UnknownNameError("torchvision dataset", name, ["cifar10", "mnist", "svhn", "usps"])
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise TransferkitError("torchvision is not installed; install the vision extra: "
                               "pip install 'transferkit[vision]'") from None
    root = str(Path(root).expanduser())
    split = "train" if train else "test"
    if key == "mnist":
        ds = tvd.MNIST(root, train=train, download=True)
        x, y, names = np.asarray(ds.data)[:, None], np.asarray(ds.targets), [str(i) for i in range(10)]
    elif key == "usps":
        ds = tvd.USPS(root, train=train, download=True)
        x, y, names = np.asarray(ds.data)[:, None], np.asarray(ds.targets), [str(i) for i in range(10)]
    elif key == "svhn":
        ds = tvd.SVHN(root, split=split, download=True)
        x, y, names = np.asarray(ds.data), np.asarray(ds.labels) % 10, [str(i) for i in range(10)]
    else:  # cifar10
        ds = tvd.CIFAR10(root, train=train, download=True)
        x, y, names = np.moveaxis(np.asarray(ds.data), -1, 1), np.asarray(ds.targets), list(ds.classes)
    images = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255)
    return Domain(f"{key}-{split}", images, torch.from_numpy(y.astype(np.int64)), names,
                  provenance={"origin": f"torchvision.datasets.{type(ds).__name__}", "split": split})
