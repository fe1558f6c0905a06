"""The :class:`Domain`: images, labels, class names, optional group ids and provenance.

A domain is an explicit object, never a convention hidden in arrays: every split,
shift and loader in transferkit takes and returns ``Domain`` objects.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
import weakref
from collections import Counter
from collections.abc import Iterable, KeysView
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary

from .errors import TransferkitError, check, first_named, is_whole, warn


def group_labels(groups: torch.Tensor, labels: torch.Tensor, names=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inverse, label)``: the group index of every sample and the label of every group
    (sorted by id). A group (the frames of one video) must hold one label; ``names``: of the
    ids, to name a group that does not."""
    ids, inverse = torch.unique(groups, return_inverse=True)
    labels = labels.long()
    lo = torch.zeros(len(ids), dtype=torch.long).scatter_reduce_(0, inverse, labels, "amin", include_self=False)
    hi = torch.zeros(len(ids), dtype=torch.long).scatter_reduce_(0, inverse, labels, "amax", include_self=False)
    if not torch.equal(lo, hi):
        g = int(torch.nonzero(lo != hi)[0])
        negative = names is None and int(ids[g]) < 0
        raise TransferkitError(f"group {int(ids[g]) if names is None else repr(names[int(ids[g])])} holds samples "
                               f"of different labels {sorted(set(labels[inverse == g].tolist()))}: a group must have "
                               f"one label, and group ids must be unique over the whole dataset, not numbered per "
                               f"class" + (f"; {int(ids[g])} is a group like any other, not 'no group': give each "
                                           f"ungrouped image an id of its own" if negative else ""))
    return inverse, hi


#: how far outside [0, 1] image values may lie (rounding of resizing and colour transforms)
RANGE_TOL = 1e-4


#: a uint8 batch whose brightest pixel is at most this was stored in a narrower range than 0-255
DARK_UINT8 = 16

#: the one placeholder class of :meth:`Domain.unlabeled` images
UNLABELED = "(unlabeled)"


def check_labeled(domain, what: str) -> None:
    """Refuse :meth:`Domain.unlabeled` images where their labels would be read (``what``: as what)."""
    check(domain is None or getattr(domain, "labeled", True),
          f"{what} {domain and domain.name!r} has no labels (Domain.unlabeled), and its labels would be read here: "
          f"give unlabelled images only as the unlabeled domain (fit(unlabeled=...))")


def looks_channels_last(x: torch.Tensor) -> bool:
    """An ``N x H x W x C`` batch (C of 1, 3 or 4) that would be read as ``N x C x H x W``."""
    return x.dim() == 4 and x.shape[1] not in (1, 3, 4) and x.shape[2] > 4 and x.shape[3] in (1, 3, 4)


def _three_dim_hint(images: torch.Tensor, shape: tuple, transpose: str) -> str:
    """The fix for 3-D ``images`` a model of input ``shape`` refuses: one image, one channels-last
    image, or grey ``N x H x W`` images for a colour model."""
    got = tuple(images.shape)
    if got == shape:
        return "; one image: images[None]"
    if got == (*shape[1:], shape[0]):
        return f"; one channels-last image (H x W x C): {transpose.replace('0, 3, 1, 2', '2, 0, 1')}[None]"
    if got[1:] == shape[1:]:
        spread = (f"numpy.repeat(images[:, None], {shape[0]}, axis=1)" if transpose.startswith("images.transpose")
                  else f"images[:, None].expand(-1, {shape[0]}, -1, -1)")  # NumPy's name for it, as transpose
        return (f"; these look like {got[0]} grey images (N x H x W) for a model of {shape[0]} channels: {spread}, "
                f"or domain.to_format(channels={shape[0]})")
    return ""


def image_batch(images, who: str, shape: tuple | None = None, exact: bool = False) -> torch.Tensor:
    """Images handed to a fitted model, as :func:`as_images` gives them (a NumPy array is
    converted). ``shape``: the ``(C, H, W)`` the model was fitted or built for; a batch that
    is that shape channels-last is named, and the channels (``exact``: the whole shape) must
    match; for one channel, ``N x H x W`` is read as ``N x 1 x H x W``, as :class:`Domain` reads it."""
    transpose = "images.permute(0, 3, 1, 2)"
    if isinstance(images, np.ndarray):
        transpose = "images.transpose(0, 3, 1, 2)"  # NumPy's name for it
        check(images.dtype.kind in "biuf", f"{who}: images must be numbers, got a numpy array of dtype {images.dtype}")
        native = images.dtype.newbyteorder("=")  # from_numpy takes neither other byte orders nor flipped views
        images = torch.from_numpy(np.ascontiguousarray(images).astype(native, copy=False))
    want = f"N x {' x '.join(map(str, shape))}" if shape is not None else "N x C x H x W"
    check(isinstance(images, torch.Tensor), f"{who}: expected an {want} image tensor (or numpy array), got "
                                            f"{type(images).__name__}"
                                            + ("; image files become one with transferkit.read_images(paths, "
                                               "size=..., channels=...)" if isinstance(images, (list, tuple, str))
                                               else ""))
    if shape is not None:
        shape = tuple(shape)
        if images.dim() == 3 and shape[0] == 1 and tuple(images.shape[1:]) == tuple(shape[1:]):  # N x H x W grey
            if images.shape[0] in (3, 4):  # or one C x H x W colour image, which would give 3 (4) predictions
                warn(f"{who}: images of shape {tuple(images.shape)} are read as {images.shape[0]} grey images "
                     f"(N x H x W) for this grey model; one colour image (C x H x W) makes one grey image with "
                     f"images.mean(0, keepdim=True)[None], or read its file with read_images(paths, size="
                     f"{shape[1]}, channels=1)")
            images = images.unsqueeze(1)
        nhwc = images.dim() == 4 and images.shape[1] != images.shape[3]
        check(not (nhwc and tuple(images.shape[3:]) + tuple(images.shape[1:3]) == shape),
              f"{who}: images of shape {tuple(images.shape)} look channels-last (N x H x W x C); the model takes "
              f"{want}: use {transpose}")
        fits = images.dim() == 4 and (tuple(images.shape[1:]) == shape if exact else images.shape[1] == shape[0])
        what = "the shape fit saw" if exact else "the channels the network was built for"
        hint = (f"; image files: transferkit.read_images(paths, size={shape[1]}, channels={shape[0]}), a domain: "
                f"domain.to_format(size={shape[1]}, channels={shape[0]})"
                if len(shape) == 3 and shape[1] == shape[2] and images.dim() == 4 else
                _three_dim_hint(images, shape, transpose) if images.dim() == 3 else "")
        check(fits, f"{who}: expected an {want} image tensor ({what}), got {tuple(images.shape)}{hint}")
        if not exact and len(shape) == 3 and tuple(images.shape[2:]) != tuple(shape[1:]):
            warn(f"{who}: images of {images.shape[2]} x {images.shape[3]} pixels for a network built for "
                 f"{shape[1]} x {shape[2]} (the size it was trained at): its predictions at another size are not "
                 f"those it was scored with{hint}")
    check(images.dim() == 4, f"{who}: expected an {want} image tensor, got shape {tuple(images.shape)}")
    return as_images(images, who)


def is_complex(values) -> bool:
    """Whether ``values`` (a tensor, an array or a list) hold complex numbers, which a float conversion would cut
    to their real parts."""
    if isinstance(values, torch.Tensor):
        return values.is_complex()
    try:
        return bool(np.iscomplexobj(values))
    except (TypeError, ValueError):  # ragged or not numbers: the conversion names it
        return False


def label_ids(labels, what: str, names: str = "class_names") -> torch.Tensor:
    """``labels`` as an int64 tensor of class ids: integers, or floats that are whole numbers
    (``1.0``); refuses text, booleans, fractions, NaN and infinities (``Domain`` and
    ``Transfer.score`` read labels alike). ``names``: the class names, named in the hints."""
    ids = f"integer class ids (positions in {names})"
    if not isinstance(labels, torch.Tensor):
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError):
            raise TransferkitError(f"{what}: labels must be {ids}, got {type(labels).__name__} {labels!r:.40}; map "
                                   f"class names to ids: [{names}.index(c) for c in labels]") from None
    check(labels.dtype != torch.bool, f"{what}: labels must be {ids}, got booleans: labels.long() if False and True "
                                      f"are classes 0 and 1")
    check(not labels.is_complex(), f"{what}: labels must be {ids}, got {labels.dtype}")
    if labels.is_floating_point():
        check(bool(labels.isfinite().all()), f"{what}: labels contain NaN or infinite values")
        check(bool((labels == labels.round()).all()), f"{what}: labels must be {ids}, got non-integral "
                                                      f"values of dtype {labels.dtype}")
    if labels.is_floating_point() or labels.dtype == torch.uint64:  # .long() would wrap what int64 cannot hold
        wide = labels.double()
        huge = wide[wide.abs() >= 2.0 ** 63]
        if huge.numel():
            raise TransferkitError(f"{what}: labels must be {ids}, found {float(huge[0]):.6g}, beyond any class id "
                                   f"(too large for int64)")
    return labels if labels.dtype == torch.int64 else labels.long()


def as_images(x: torch.Tensor, what: str = "images") -> torch.Tensor:
    """``x`` as float32 images in [0, 1]: uint8 (0-255) is scaled, other float types are
    converted; refuses other types, NaN or infinite values, values outside [0, 1] and
    channels-last batches (``N x H x W x C`` read as ``N x C x H x W``)."""
    if looks_channels_last(x):
        raise TransferkitError(f"{what}: images must be N x C x H x W; shape {tuple(x.shape)} looks like N x H x W x C "
                               f"(channels last): use images.permute(0, 3, 1, 2)")
    if x.dtype == torch.uint8:  # 0-255 pixels, as image files and the npz loader hold them
        x = x.float().div_(255)
    elif x.dtype != torch.float32:
        check(x.is_floating_point(), f"{what}: images must be float in [0, 1] or uint8 in 0-255, got {x.dtype}")
        x = x.float()
    if not torch.isfinite(x.sum()):  # one cheap pass; the exact check only when it fails
        check(bool(torch.isfinite(x).all()), f"{what}: images contain NaN or infinite values")
    if x.numel():
        lo, hi = (float(v) for v in torch.aminmax(x))
        scale = (f" (divide by their full range: 255 for 8-bit pixels"
                 f"{'' if round(hi) == 255 else ', %g if that is their maximum' % hi}; or pass uint8 0-255)"
                 if hi > 2 else "")
        check(lo >= -RANGE_TOL and hi <= 1 + RANGE_TOL, f"{what}: image values must lie in [0, 1], found {lo:g}..{hi:g}"
                                                        f"{scale}")
    return x



def name_text(name, where: str) -> str:
    """A name as text: bytes (as h5py and ``numpy.array([b"cat", ...])`` give them) decoded as UTF-8."""
    if isinstance(name, bytes):
        try:
            return name.decode("utf-8")
        except UnicodeDecodeError as e:
            raise TransferkitError(f"{where}: class_names are bytes that are not UTF-8 ({e}); store them as "
                                   f"str (numpy.array(names, dtype=str))") from None
    return str(name)


def loose_name(name) -> str:
    """A class name with case and surrounding spaces ignored, in one Unicode form (NFC): names
    equal so are one class spelt two ways (``cat``, ``Cat ``)."""
    return unicodedata.normalize("NFC", str(name)).strip().casefold()


def head_mapping(source_classes: list[str], target_classes: list[str]) -> list[int | None]:
    """For each target class, the index of the same-named source class (or None). Names
    match exactly; a target class that matches a source class only up to case or surrounding
    spaces warns (it is a new class)."""
    mapping = [source_classes.index(c) if c in source_classes else None for c in target_classes]
    loose = {loose_name(c): c for c in source_classes}
    near = [(c, loose[loose_name(c)]) for c, s in zip(target_classes, mapping) if s is None and loose_name(c) in loose]
    if near:
        warn(f"target class(es) {[c for c, _ in near][:10]} differ from the source's "
             f"{[s for _, s in near][:10]} only in case or spaces; class names match exactly, so they "
             f"count as new classes (rename them to share the source's classifier rows)")
    return mapping


def labels_by_name(domain, class_names: Sequence[str]) -> torch.Tensor:
    """``domain``'s labels as ids into ``class_names``, its classes matched by name (-1 for a
    class that ``class_names`` lacks)."""
    names = list(class_names)
    if list(domain.class_names) == names:
        return domain.labels
    lut = torch.tensor([names.index(c) if c in names else -1 for c in domain.class_names], dtype=torch.long)
    return lut[domain.labels]


def _loose_names(names: list[str]) -> list[str]:
    """``names`` compared loosely: case and surrounding spaces ignored, without the prefix and
    suffix that all of them share (never cutting into a number: ``d0..d9`` -> ``0..9``,
    ``class_01`` -> ``1``, but ``10, 20`` stay), numbers read as numbers (``07`` is ``7``)."""
    keys = [loose_name(n) for n in names]
    if len(keys) >= 2:
        pre = os.path.commonprefix(keys).rstrip("0123456789")
        suf = os.path.commonprefix([k[::-1] for k in keys])[::-1].lstrip("0123456789")
        if all(len(k) > len(pre) + len(suf) for k in keys):
            keys = [k[len(pre):len(k) - len(suf)] for k in keys]
    return [str(int(k)) if k.isascii() and k.isdigit() else k for k in keys]


def numbers_classes(names: list[str]) -> bool:
    """Whether ``names`` number their classes (``0..9``, also ``d0..d9`` compared loosely: :func:`_loose_names`),
    as an npz file without ``class_names`` does."""
    return all(k.isascii() and k.isdigit() for k in _loose_names([str(n) for n in names]))


def warn_unshared_classes(source_classes: list[str], target_classes: list[str], chosen: bool) -> None:
    """Warn when no target class is named as a source class, so that a head trained on target
    labels gets a new row for every class and keeps none of the source classifier, and the
    names suggest a naming mistake rather than other classes: the names match when compared
    loosely (``d0..d9`` and ``0..9``: :func:`_loose_names`), or both sides have as many classes,
    one side numbers them and the other names them (``0..9`` and ``zero..nine``: an npz file
    without ``class_names`` against named folders), and neither is a subset the caller
    ``chosen`` (``source_classes`` / ``target_classes``, ``select_classes``). Label sets that
    are disjoint on purpose (digits 0-4 -> 5-9, of one domain or of two files) are named alike
    and stay quiet. Names that differ only in case are named by :func:`head_mapping`."""
    source, target = [str(c) for c in source_classes], [str(c) for c in target_classes]
    if not source or not target or set(source) & set(target):
        return
    near = {loose_name(c) for c in source}
    if all(loose_name(c) in near for c in target):  # head_mapping warns about these
        return

    def show(names):
        return first_named(repr(c) for c in names)
    loose_source = dict(zip(_loose_names(source), source))
    pairs = [(t, loose_source[k]) for t, k in zip(target, _loose_names(target)) if k in loose_source]
    head = (f"no target class is named as a source class (source {show(source)}; target {show(target)}), so a "
            f"method trained on target labels gets a new classifier row for every target class and keeps none of "
            f"the source's (classes are matched by exact name)")
    if pairs and 2 * len(pairs) >= len(target):
        alike = first_named(f"target {t!r} ~ source {s!r}" for t, s in pairs)
        warn(f"{head}; they look like the same classes named otherwise ({alike}). Give the target's classes the "
             f"source's names (folder names, npz class_names) to keep their rows; if they are other classes, this is "
             f"expected")
    elif len(source) == len(target) and not chosen and \
            sum(numbers_classes(side) for side in (source, target)) == 1:
        warn(f"{head}; one side numbers its classes and the other names them. If they are the same classes, give "
             f"them the same names (folder names, npz class_names) to keep their rows; if they are other classes, "
             f"this is expected")


def warn_numbered_match(source: Domain, target: Domain) -> None:
    """Warn when two domains of other origins both number their classes (npz files without
    ``class_names``): their classes are matched by those numbers, right only if class ``i``
    of one is class ``i`` of the other."""
    numbered = [d.provenance.get("numbered_classes") for d in (source, target)]
    origins = {os.path.realpath(str(d.provenance.get("origin", "")).removeprefix("npz:")) for d in (source, target)}
    if not all(numbered) or len(origins) == 1:  # one file, perhaps by two paths: its own classes
        return
    known = set(source.class_names)
    shared = [c for c in target.class_names if c in known]
    if shared:
        warn(f"the source {source.name!r} and the target {target.name!r} both number their classes (no class_names), "
             f"so target class(es) {shared[:10]}{'...' if len(shared) > 10 else ''} are taken to be the source's "
             f"classes of those numbers (sharing their classifier rows); give the npz files class_names: other "
             f"names if they are other classes, the same names (no warning) if they are the same")


#: :meth:`Domain.digest` of each images tensor, with the versions it was computed at (entries go with the tensors)
_DIGESTS = WeakIdKeyDictionary()


@dataclass(eq=False, repr=False)  # compared by identity (tensors have no truth value); a short repr
class Domain:
    """A labelled image domain held in memory.

    images: ``N x C x H x W`` float32 tensor with values in [0, 1] (uint8 0-255 is scaled),
        any C (C > 4 equal to H or W warns: the layout is ambiguous); ``N x H x W`` is read as
        grey ``N x 1 x H x W``; detached from autograd; held on the CPU (tensors on a GPU are
        copied there: training and scoring move each batch to the device).
    labels: ``N`` int64 tensor with values in ``range(len(class_names))`` (whole-number
        floats are converted; booleans are refused).
    class_names: name of each label id (label ``i`` is ``class_names[i]``).
    groups: optional ``N`` ids (integers, or names such as video ids, numbered in sorted
        order into an int64 tensor); samples sharing an id form one group
        (frames of one video), used by grouped accuracy.
    provenance: free-form description of where the data came from (source, seed,
        shifts applied, ...), written into results.
    labeled: ``False`` for :meth:`unlabeled` images, whose labels are placeholders.
    keys: optional ``N`` int64 keys that name each sample whatever else the domain holds (a
        folder's: a hash of each file's path); :func:`~transferkit.splits.split_domain` then
        places each sample by its key, so adding or removing files moves few others.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    groups: torch.Tensor | None = None
    provenance: dict = field(default_factory=dict)
    labeled: bool = True
    keys: torch.Tensor | None = None

    @classmethod
    def unlabeled(cls, name: str, images, groups=None, provenance: dict | None = None) -> "Domain":
        """Images without labels, e.g. the unlabelled target of domain adaptation, ``lext`` and
        ``finetune_adv``: ``Transfer.fit(unlabeled=Domain.unlabeled("mine", images))``. Its labels
        are placeholders (0, one class named ``"(unlabeled)"``) that nothing reads: ``fit`` refuses
        it as ``target=``, ``source=`` or ``val=``, and ``score`` / ``report`` refuse it."""
        try:
            n = images.shape[0] if hasattr(images, "shape") else len(images)
        except (TypeError, IndexError):
            raise TransferkitError(f"Domain.unlabeled({name!r}): images must be a batch, N x C x H x W, got "
                                   f"{type(images).__name__} {images!r:.40}") from None
        check(provenance is None or isinstance(provenance, dict), f"Domain.unlabeled({name!r}): provenance must be "
                                                                  f"a dict, got {type(provenance).__name__}")
        return cls(name, images, torch.zeros(n, dtype=torch.long), [UNLABELED], groups, dict(provenance or {}),
                   labeled=False)

    def __post_init__(self):
        x, y = self.images, self.labels
        first = (y[0] if isinstance(y, (list, tuple)) and len(y) else
                 y.reshape(-1)[0] if isinstance(y, np.ndarray) and y.dtype.kind in "USO" and y.size else None)
        text = isinstance(first, (str, np.str_))
        check(not text, f"domain {self.name!r}: labels are class names ({str(first)!r}, ...); "
                        f"give class ids, positions in class_names: torch.tensor([class_names.index(c) for c in "
                        f"labels])")
        if isinstance(x, np.ndarray) and x.dtype.kind in "fiub":  # a NumPy array: a copy of its numbers (native
            # byte order): an edit of the array afterwards, which no digest would see, does not reach the domain
            x = torch.from_numpy(np.array(x, dtype=x.dtype.newbyteorder("="), order="C", copy=True))
        if isinstance(y, (np.ndarray, list, tuple)):
            y = label_ids(np.array(y, copy=True) if isinstance(y, np.ndarray) else y, f"domain {self.name!r}")
        check(not (isinstance(x, np.ndarray) and x.dtype.kind not in "fiub"),
              f"domain {self.name!r}: images must hold real numbers (floats in [0, 1] or 8-bit integers), got a "
              f"NumPy array of dtype {getattr(x, 'dtype', None)}")
        for what, value in (("images", x), ("labels", y)):
            check(isinstance(value, torch.Tensor), f"domain {self.name!r}: {what} must be a torch tensor, got "
                                                   f"{type(value).__module__}.{type(value).__name__} "
                                                   + ("(torch.stack(images) joins a list of image tensors, "
                                                      "numpy.stack(images) one of arrays)"
                                                      if what == "images" and isinstance(value, (list, tuple))
                                                      else "(torch.as_tensor(...) converts it)"))
        # data, not a graph: no grad kept; on the CPU, where the class lookups, splits and subsets index them
        # (training and scoring copy each batch to the device)
        self.images, self.labels = x, y = x.detach().cpu(), y.detach().cpu()
        if x.dim() == 3:  # N x H x W grey images, as the npz loader reads them
            self.images = x = x.unsqueeze(1)
        check(x.dim() == 4, f"domain {self.name!r}: images must be an N x C x H x W tensor (or N x H x W grey), got "
                            f"shape {tuple(x.shape)}")
        check(min(x.shape[1:]) > 0, f"domain {self.name!r}: images must have channels and pixels, got "
                                    f"{tuple(x.shape[1:])} (C x H x W)")
        check(y.dim() == 1 and y.shape[0] == x.shape[0],
              f"domain {self.name!r}: labels must be a 1-D tensor with one label per image "
              f"({x.shape[0]} images, labels of shape {tuple(getattr(y, 'shape', ()))})")
        if x.dtype == torch.uint8 and x.numel() and int(x.max()) <= DARK_UINT8:
            top = int(x.max())
            warn(f"domain {self.name!r}: " + ("every pixel of the uint8 images is 0" if top == 0 else
                                                f"the uint8 images go up to {top} of 255, so they load almost black "
                                                f"(uint8 is read as 0-255): pass floats in [0, 1], divided by their "
                                                f"full range (e.g. images.float() / {top} if {top} is their maximum)"))
        self.images = x = as_images(x, f"domain {self.name!r}")
        if x.shape[1] > 4 and x.shape[1] in x.shape[2:]:  # multi-band images are kept; this shape may be either
            warn(f"domain {self.name!r}: images of shape {tuple(x.shape)} are read as {x.shape[1]} channels "
                 f"(N x C x H x W); if the last axis holds the channels, use images.permute(0, 3, 1, 2)")
        self.labels = y = label_ids(y, f"domain {self.name!r}")
        names = self.class_names
        if isinstance(names, (torch.Tensor, np.ndarray)):
            names = names.tolist()  # str() of a tensor element would read 'tensor(0)'
        if isinstance(names, dict):  # torchvision's class_to_idx: the names in the order of their ids
            ids = list(names.values())
            check(all(is_whole(i) for i in ids) and sorted(ids) == list(range(len(ids))),
                  f"domain {self.name!r}: class_names given as a dict must map each name to its id, 0..C-1 once "
                  f"each (torchvision's class_to_idx), got {names!r:.80}; give a list of names in id order")
            names = sorted(names, key=names.get)
        check(not isinstance(names, (str, bytes, set, frozenset)) and hasattr(names, "__iter__"),
              f"domain {self.name!r}: class_names must be a list of names, got {names!r:.80}")
        names = list(names)
        check(all(c is not None and not isinstance(c, (list, tuple, dict, set, torch.Tensor, np.ndarray))
                  for c in names),
              f"domain {self.name!r}: class_names must be a list of names, got {names!r:.80}")
        # one Unicode form (NFC): a name saved on macOS (NFD: "e" + accent) is the same name as on Windows
        names = [name_text(c, f"domain {self.name!r}") for c in names]
        self.class_names = [unicodedata.normalize("NFC", c) for c in names]
        check(all(c.strip() for c in self.class_names), f"domain {self.name!r}: a class name is empty: "
                                                        f"{self.class_names[:10]}")
        dup = sorted(c for c, n in Counter(self.class_names).items() if n > 1)
        forms = len(set(names)) > len(set(self.class_names))  # equal only in one Unicode form
        check(not dup, f"domain {self.name!r}: repeated class names {dup}"
                       + (" (spelt in two Unicode forms, e.g. an accent as its own character and as part of the "
                          "letter, as macOS and Windows save names: one name here; rename one class or folder)"
                          if forms else ""))
        if y.numel():
            lo, hi = int(y.min()), int(y.max())
            check(lo >= 0 and hi < len(self.class_names),
                  f"domain {self.name!r}: labels out of range [0, {len(self.class_names) - 1}] "
                  f"(found {lo}..{hi})" + (": they look 1-based; class ids start at 0, subtract 1"
                                           if lo == 1 and hi == len(self.class_names) else
                                           f": {len(self.class_names)} class_names for labels up to {hi}, one "
                                           f"name per class id is needed" if lo >= 0 else ""))
        if self.keys is not None:
            try:
                self.keys = torch.as_tensor(self.keys).cpu()
            except (TypeError, ValueError, RuntimeError):
                raise TransferkitError(f"domain {self.name!r}: keys must be one int64 per image, got "
                                       f"{type(self.keys).__name__} {self.keys!r:.40}") from None
            check(self.keys.dtype == torch.int64 and self.keys.shape == y.shape,
                  f"domain {self.name!r}: keys must be one int64 per image, got {self.keys.dtype} of shape "
                  f"{tuple(self.keys.shape)}")
        if self.groups is not None:
            from .evaluate import is_text, unique_ids  # (evaluate imports this module)
            names = None
            if is_text(self.groups):  # video ids such as "v1": numbered in sorted order
                names, self.groups = unique_ids(self.groups, f"domain {self.name!r}: group ids")
            try:
                self.groups = torch.as_tensor(self.groups).cpu()
            except (TypeError, ValueError, RuntimeError):
                raise TransferkitError(f"domain {self.name!r}: groups must be ids, one per image: integers or "
                                       f"names (strings), got {type(self.groups).__name__}") from None
            check(not self.groups.is_floating_point() and self.groups.shape == y.shape,
                  f"domain {self.name!r}: groups must have one integer id per image")
            self.groups = self.groups.long()
            try:
                group_labels(self.groups, y, names)
            except TransferkitError as e:
                raise TransferkitError(f"domain {self.name!r}: {e}") from None

    # ---- basic facts -------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        shape = " x ".join(map(str, self.images.shape[1:]))
        groups = f", {len(torch.unique(self.groups))} groups" if self.groups is not None else ""
        classes = f"{self.num_classes} classes" if self.labeled else "unlabeled"
        return f"Domain({self.name!r}, {len(self)} images of {shape}, {classes}{groups})"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def digest(self) -> str:
        """A content hash of every image and label (16 hex digits): caches and checkpoints
        are reused only for the very same data. Class names and groups are not part of it
        (a run's ``data.json`` adds both, the pre-training cache key the class names). Computed once per images
        and labels tensor: again only after either is replaced or changed in place by torch (its version), or
        after :meth:`forget_digest` (a write through a NumPy view leaves the version as it was: ``Transfer.fit``
        forgets its domains' digests, so that each fit hashes them once)."""
        stamp = (self.images._version, id(self.labels), self.labels._version)
        memo = _DIGESTS.get(self.images)
        if memo is not None and memo[0] == stamp and memo[1]() is self.labels:
            return memo[2]
        h = hashlib.sha256(self.images.detach().cpu().contiguous().numpy().data)  # hashed in place, no copy
        h.update(self.labels.detach().cpu().contiguous().numpy().data)
        _DIGESTS[self.images] = (stamp, weakref.ref(self.labels), h.hexdigest()[:16])
        return _DIGESTS[self.images][2]

    def forget_digest(self) -> None:
        """Drop the memo of :meth:`digest`: the next call hashes the images and labels again."""
        _DIGESTS.pop(self.images, None)

    def check_contents(self, what: str) -> None:
        """Refuse images or labels that were replaced after the domain was built with ones it
        would have refused (uint8 or 0-255 pixels, NaN, labels beyond ``class_names``): two
        passes over the images, no copy."""
        x, y, n = self.images, self.labels, len(self.class_names)
        changed = "changed after it was built? build a new Domain(name, images, labels, class_names), which checks them"
        check(isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.dim() == 4,
              f"{what} {self.name!r}: its images are {getattr(x, 'dtype', type(x).__name__)} of shape "
              f"{tuple(getattr(x, 'shape', ()))}, not float32 N x C x H x W ({changed})")
        try:
            as_images(x, f"{what} {self.name!r}")
        except TransferkitError as e:
            raise TransferkitError(f"{e} ({changed})") from None
        check(isinstance(y, torch.Tensor) and y.dtype == torch.long and y.shape == (len(x),),
              f"{what} {self.name!r}: its labels are not one int64 class id per image ({changed})")
        if y.numel():
            lo, hi = int(y.min()), int(y.max())
            check(lo >= 0 and hi < n, f"{what} {self.name!r}: its labels go from {lo} to {hi} but it names {n} "
                                      f"classes ({changed})")

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=self.num_classes)

    def present_classes(self) -> list[int]:
        return torch.nonzero(self.class_counts()).flatten().tolist()

    def describe(self) -> dict:
        return {
            "name": self.name,
            "size": len(self),
            "image_shape": list(self.image_shape),
            "classes": self.class_names,
            "class_counts": self.class_counts().tolist(),
            "grouped": self.groups is not None,
        }

    # ---- derived domains ---------------------------------------------------------
    def subset(self, index, name: str | None = None) -> "Domain":
        """The samples at ``index`` (bool mask or integer indices; negative ones count from the end)."""
        takes = f"domain {self.name!r}: subset takes a bool mask or integer indices"
        check(index is not None and index is not Ellipsis and not isinstance(index, (str, bytes, set, frozenset, dict)),
              f"{takes}, got {type(index).__name__} {index!r:.40}")
        try:
            index = torch.as_tensor(index)
        except (TypeError, ValueError, RuntimeError):
            raise TransferkitError(f"{takes}, got {type(index).__name__} {index!r:.40}") from None
        if index.numel() == 0:
            index = index.long()
        check(index.dtype == torch.bool or not (index.is_floating_point() or index.is_complex()),
              f"{takes}, got {index.dtype}")
        if index.dtype == torch.bool:
            check(tuple(index.shape) == (len(self),), f"domain {self.name!r}: a bool mask must have one entry per "
                                                      f"sample ({len(self)}), got shape {tuple(index.shape)}")
            index = torch.nonzero(index).flatten()
        index = index.long()  # uint8 would index as a (deprecated) mask
        check(index.dim() == 1, f"domain {self.name!r}: subset takes a 1-D index, got shape {tuple(index.shape)}")
        check(len(index) == 0 or (int(index.min()) >= -len(self) and int(index.max()) < len(self)),
              f"domain {self.name!r}: indices must lie in [0, {len(self) - 1}] (or count back from -1), found "
              f"{int(index.min()) if len(index) else ''}..{int(index.max()) if len(index) else ''}")
        return replace(
            self,
            name=name or self.name,
            images=self.images[index],
            labels=self.labels[index],
            groups=None if self.groups is None else self.groups[index],
            keys=None if self.keys is None else self.keys[index],
        )

    def __getitem__(self, index) -> "Domain":
        """``domain[:100]``, ``domain[mask]``, ``domain[[3, 1]]``: :meth:`subset` (a domain, not a sample)."""
        if isinstance(index, slice):
            index = torch.arange(len(self))[index]
        check(not isinstance(index, (int, tuple)) and not (hasattr(index, "dim") and index.dim() == 0),
              f"domain {self.name!r}: indexing gives a sub-domain: use a slice, a mask or a list of indices "
              f"(domain[i:i + 1]; its images are domain.images[i])")
        return self.subset(index)

    __iter__ = None  # not a sequence of samples: iter(domain) stays a TypeError

    def select_classes(self, classes: Sequence[int | str], relabel: bool = True,
                       allow_empty: bool = False) -> "Domain":
        """Keep only ``classes``: an ``int`` is a class id, a ``str`` a class name (a string of
        digits that names no class is read as an id, unless every class is named by a number,
        numbered folders or years, where it is an unknown name). So on numbered folders ``1, 10, 2``
        ``[1, 2]`` means ids (classes ``10`` and ``2``) and ``["1", "2"]`` names; configs go
        through :func:`~transferkit.splits.parse_classes`, where a number names a class on
        numbered folders. With ``relabel`` labels become 0..len-1 in the given order and
        ``class_names`` shrink accordingly, so a set of several classes (no order of its own; for names
        it changes between processes) is refused then; a dict gives its keys in insertion order.
        ``allow_empty``: a domain without an image of them is returned, not refused (a split part of
        small classes)."""
        check(not isinstance(classes, str), f"domain {self.name!r}: select_classes takes a list of class names or "
                                            f"ids, got the string {classes!r} (transferkit.splits.parse_classes("
                                            f"{classes!r}, domain) reads '0-4' or 'a,b')")
        check(isinstance(classes, Iterable) and not isinstance(classes, bytes),
              f"domain {self.name!r}: select_classes takes a list of class names or ids, got "
              f"{type(classes).__name__} {classes!r:.40}")
        check(not relabel or not isinstance(classes, AbstractSet) or isinstance(classes, KeysView) or len(classes) < 2,
              f"domain {self.name!r}: select_classes relabels the classes 0..n-1 in the given order, and a "
              f"{type(classes).__name__} has none (its order can change from one process to the next); give a list "
              f"in the wanted order, e.g. sorted(...), or relabel=False")
        ids = [self._class_id(c) for c in classes]
        check(len(ids) > 0, f"domain {self.name!r}: empty class subset")
        check(len(set(ids)) == len(ids), f"domain {self.name!r}: repeated class in {list(classes)}")
        ids_t = torch.tensor(ids)
        mask = (self.labels[:, None] == ids_t[None, :]).any(1)
        sub = self.subset(mask)
        check(len(sub) > 0 or allow_empty, f"domain {self.name!r}: no samples of classes {list(classes)}")
        if not relabel:
            return sub
        lut = torch.full((self.num_classes,), -1, dtype=torch.long)
        lut[ids_t] = torch.arange(len(ids))
        return replace(sub, labels=lut[sub.labels], class_names=[self.class_names[i] for i in ids],
                       provenance={**sub.provenance, "classes": [self.class_names[i] for i in ids]})

    def _class_id(self, c) -> int:
        c = unicodedata.normalize("NFC", c) if isinstance(c, str) else c
        if isinstance(c, str) and c.isdigit() and c not in self.class_names:  # years, codes: a digit text is a name
            check(not all(n.isdigit() for n in self.class_names),
                  f"domain {self.name!r}: unknown class {c!r}; classes are {self.class_names[:20]} (named by "
                  f"numbers: a text is read as a name; give an int for a class id)")
        if isinstance(c, str) and not c.isdigit() or (isinstance(c, str) and c in self.class_names):
            if c not in self.class_names:
                raise TransferkitError(f"domain {self.name!r}: unknown class {c!r}; "
                                       f"classes are {self.class_names}")
            return self.class_names.index(c)
        if isinstance(c, torch.Tensor) and c.dim() == 0 and not c.is_floating_point() and c.dtype != torch.bool:
            c = int(c)  # an element of an integer tensor of ids
        check(isinstance(c, str) or is_whole(c),
              f"domain {self.name!r}: a class is a name or a whole-number id, got {c!r}")
        i = int(c)
        check(0 <= i < self.num_classes,
              f"domain {self.name!r}: class id {i} out of range [0, {self.num_classes - 1}]")
        return i

    def to_format(self, size: int | None = None, channels: int | None = None) -> "Domain":
        """Resize to ``size x size`` (bilinear, antialiased) and convert to ``channels``
        (grayscale replicated to 3 channels; colour to grey by the luma weights 0.299, 0.587,
        0.114; RGBA loses its alpha channel first)."""
        check(size is None or is_whole(size, 1),
              f"domain {self.name!r}: size must be a whole number of pixels >= 1 (square images), got {size!r}")
        check(channels is None or is_whole(channels), f"domain {self.name!r}: channels must be 1 or 3 (an int), got "
                                                      f"{type(channels).__name__} {channels!r}")
        x = self.images
        if channels in (1, 3) and x.shape[1] == 4:  # RGBA: the colour, its alpha dropped (as the npz loader)
            x = x[:, :3]
        if channels is not None and x.shape[1] != channels:
            if x.shape[1] == 1 and channels == 3:
                x = x.expand(-1, 3, -1, -1).contiguous()
            elif x.shape[1] == 3 and channels == 1:
                x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
            else:
                raise TransferkitError(f"domain {self.name!r}: cannot convert {x.shape[1]} channels "
                                       f"to {channels}")
        if size is not None and tuple(x.shape[2:]) != (size, size):
            check_memory(len(x) * x.shape[1] * size * size * 4,
                         f"domain {self.name!r}: {len(x)} images of {x.shape[1]} x {size} x {size}",
                         "use a smaller image size")
            x = _resized(x, size)
        return replace(self, images=x)

    def with_name(self, name: str) -> "Domain":
        return replace(self, name=name)


def _resized(x: torch.Tensor, size: int, chunk_mb: float = 64) -> torch.Tensor:
    """``x`` resized to ``size x size`` (bilinear, antialiased, clamped to [0, 1]) into one tensor
    allocated once, ``chunk_mb`` of input at a time: the whole set at once held the resize's
    intermediate buffers besides the input and the result (3.5x the result at its peak)."""
    out = torch.empty(len(x), x.shape[1], size, size, dtype=x.dtype, device=x.device)
    step = max(1, int(chunk_mb * 2**20) // max(1, x[:1].numel() * x.element_size()))
    for i in range(0, len(x), step):
        out[i:i + step] = F.interpolate(x[i:i + step], size=(size, size), mode="bilinear", align_corners=False,
                                        antialias=True).clamp_(0, 1)
    return out


def check_memory(need: int, what: str, advice: str) -> None:
    """Refuse, before allocating, ``need`` bytes for ``what`` when they exceed this machine's
    physical memory (a raw allocator error otherwise, or a machine swapping)."""
    have = memory_bytes()
    check(have is None or need < have, f"{what} need {need / 2**30:.1f} GiB, more than this machine's "
                                       f"{(have or 0) / 2**30:.1f} GiB of memory: {advice}")


def memory_bytes() -> int | None:
    """This machine's physical memory (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
