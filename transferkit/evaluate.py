"""Evaluation: accuracy, per-class accuracy, confusion matrix, grouped accuracy, and
mean with standard error over repeats (seed 000 §4.1 reports mean and standard error
over 10 random label subsets)."""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np
import torch

from .domain import group_labels
from .errors import TransferkitError, check, class_ids, is_whole, whole_valued


def is_text(values) -> bool:
    """``values`` (a list or array, not a tensor) holds strings or other objects, not numbers."""
    return not isinstance(values, torch.Tensor) and np.asarray(values).dtype.kind in "USO"


def text_ids(*arrays, what: str) -> list:
    """``arrays`` as they are when none holds text; else all of them as ``long`` tensors of ids,
    the names numbered together in sorted order (``np.unique``), so that equal names get equal ids
    across arrays (video ids ``"v1"``, class names)."""
    if not any(is_text(a) for a in arrays):
        return list(arrays)
    values = [np.asarray(a) for a in arrays]
    check(all(v.ndim == 1 and v.dtype.kind in "USO" for v in values),
          f"{what} must be 1-D, all names (strings) or all numbers; got {', '.join(str(v.dtype) for v in values)} "
          f"of shapes {', '.join(str(v.shape) for v in values)}")
    _, ids = unique_ids(np.concatenate(values), what)
    return list(ids.split([len(v) for v in values]))


def unique_ids(values, what: str, instead: str = "or no ids at all (groups=None)") -> tuple[np.ndarray, torch.Tensor]:
    """``(distinct, ids)``: the distinct values in sorted order (``np.unique``) and each value's
    index among them, a ``long`` tensor; names and numbers, not both in one sequence.
    ``instead``: what the caller takes in place of ids that are all missing."""
    v = np.asarray(values)
    check(v.ndim == 1, f"{what} must be 1-D, one per item; got shape {v.shape}")
    try:
        distinct, inverse = np.unique(v.astype(object) if v.dtype.kind in "USO" else v, return_inverse=True)
    except TypeError:
        missing = sum(x is None or (isinstance(x, float) and x != x) for x in v.tolist())  # None or NaN
        if missing == len(v):
            raise TransferkitError(f"{what} are all None (missing): give every item an id (a string or an "
                                   f"integer), {instead}") from None
        raise TransferkitError(f"{what}: " + (f"{missing} of the {len(v)} are None or NaN (missing); give every item "
                                              f"an id" if missing else "names of mixed kinds (strings and numbers) "
                                              "cannot be sorted; give them all as strings")) from None
    return distinct, torch.from_numpy(inverse.reshape(-1).astype(np.int64))


def _class_id_labels(labels, what: str = "labels"):
    if is_text(labels):  # the message is built only here: np.asarray of a CUDA tensor raises
        raise TransferkitError(f"{what} must be class ids 0..C-1 (the columns of the logits), got names such as "
                               f"{np.asarray(labels).reshape(-1)[:3].tolist()}; map them to ids, e.g. "
                               f"[class_names.index(n) for n in names]")
    return labels


def fraction_correct(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy as the exact fraction ``correct / n`` (a float32 mean stores 79 of 100 as
    0.7900000214576721); 0.0 for no labels."""
    return int((torch.as_tensor(pred) == torch.as_tensor(labels)).sum()) / len(labels) if len(labels) else 0.0


def module_device(module) -> torch.device | None:
    """The device of a module's first parameter (or buffer); ``None`` for anything else."""
    if not isinstance(module, torch.nn.Module):
        return None
    first = next(iter(module.parameters()), None)
    first = first if first is not None else next(iter(module.buffers()), None)
    return None if first is None else first.device


#: values (pixels x channels) of the images that one chunk of scoring holds at most: 1,024 colour 32 x 32 images.
#: Larger images go in fewer rows (colour 224 x 224: 20), so that a chunk's activations stay bounded
CHUNK_VALUES = 1024 * 3 * 32 * 32


def chunk_rows(images: torch.Tensor, most: int = 1024) -> int:
    """Rows per chunk when scoring ``images``: ``most``, fewer for images of more than
    ``CHUNK_VALUES / most`` values each (at least one). A pass over activations of these images
    takes the images' rows, so that its chunks are the same images (and give the same bits)."""
    per_image = images[0].numel() if len(images) else 1
    return max(1, min(most, CHUNK_VALUES // max(per_image, 1)))


@torch.no_grad()
def predict_logits(forward: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                   batch_size: int | None = None, device: torch.device | None = None) -> torch.Tensor:
    """Run ``forward`` over ``inputs`` in chunks of ``batch_size`` rows (by default
    :func:`chunk_rows`: 1,024 images up to colour 32 x 32, fewer of larger ones) and concatenate
    the outputs, on the device of ``inputs``. Each chunk is a copy, on ``device`` (by default the
    module ``forward``'s: CPU images score with a model on a GPU), so ``inputs`` stays as it was
    when ``forward`` changes its input in place (e.g. a unit that starts with
    ``LeakyReLU(inplace=True)`` run on cached activations)."""
    if len(inputs) == 0:
        return torch.empty(0)
    batch_size = chunk_rows(inputs) if batch_size is None else batch_size
    device = device if device is not None else module_device(forward)
    return torch.cat([forward(inputs[i:i + batch_size].to(device or inputs.device, copy=True)).to(inputs.device)
                      for i in range(0, len(inputs), batch_size)])


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     num_outputs: int | None = None) -> torch.Tensor:
    """``C[i, j]`` counts samples of true class ``i`` predicted as output ``j``: ``num_classes``
    rows and ``max(num_classes, num_outputs)`` columns (a model may have more outputs than the
    domain has classes, e.g. a source head on a subset of its classes). Computed on the CPU."""
    pred, labels = torch.as_tensor(pred).detach().cpu(), torch.as_tensor(labels).cpu()
    width = max(num_classes, num_outputs or 0)
    check(pred.dim() == 1 and labels.dim() == 1 and len(pred) == len(labels),
          f"confusion_matrix needs one prediction per label, got shapes {tuple(pred.shape)} and {tuple(labels.shape)}")
    for name, v, hi in (("labels", labels, num_classes), ("predictions", pred, width)):
        check(whole_valued(v), f"{name} must be whole class ids")
        if len(v):
            check(int(v.min()) >= 0 and int(v.max()) < hi,
                  f"{name} must lie in [0, {hi - 1}], found {int(v.min())}..{int(v.max())}")
    flat = labels.long() * width + pred.long()
    return torch.bincount(flat, minlength=num_classes * width).view(num_classes, width)


def classification_report(logits: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None,
                          groups: torch.Tensor | None = None) -> dict:
    """Accuracy, per-class accuracy (recall, sensitivity: the fraction of a class's samples
    predicted as it; None for a class without samples), ``support`` (samples per class), balanced
    accuracy (the mean of the per-class accuracies over the classes that have samples,
    scikit-learn's ``balanced_accuracy_score``) and confusion matrix (rows: true class); with
    ``groups`` also the per-group accuracy of seed 000 §4.2 (softmax averaged over the samples
    of a group; group ids may be names, such as video ids). Computed on the CPU: tensors on
    another device (a GPU) are copied there."""
    logits, labels = torch.as_tensor(logits).detach().cpu(), torch.as_tensor(_class_id_labels(labels)).cpu()
    check(len(labels) > 0, "cannot evaluate on an empty domain")
    check(logits.dim() == 2 and logits.shape[1] >= 1,
          f"classification_report needs N x C logits (C >= 1), got shape {tuple(logits.shape)}")
    check(num_classes is None or is_whole(num_classes, 1),
          f"num_classes must be a whole number >= 1 or None, got {num_classes!r}")
    check(len(logits) == len(labels), f"{len(logits)} predictions for {len(labels)} labels")
    check(bool(torch.isfinite(logits).all()), "the logits contain NaN or infinite values (a diverged network?)")
    if groups is not None:
        check(len(groups) == len(labels), f"{len(labels)} labels but {len(groups)} group ids")
    num_classes = int(num_classes) if num_classes is not None else logits.shape[1]
    pred = logits.argmax(1)
    conf = confusion_matrix(pred, labels, num_classes, logits.shape[1])
    support = conf.sum(1)
    per_class = torch.where(support > 0, conf.diag().double() / support.clamp(min=1), torch.nan)
    report = {
        "accuracy": fraction_correct(pred, labels),
        "per_class_accuracy": [None if math.isnan(v) else round(v, 6) for v in per_class.tolist()],
        "balanced_accuracy": float((conf.diag().double() / support.clamp(min=1))[support > 0].mean()),
        "confusion": conf.tolist(),
        "support": support.tolist(),
        "n": int(len(labels)),
    }
    if groups is not None:
        report["group_accuracy"] = grouped_accuracy(logits, labels, groups)
    return report


def grouped_accuracy(logits: torch.Tensor, labels: torch.Tensor, groups) -> float:
    """Accuracy of groups (e.g. videos) classified by their mean softmax (seed 000 §4.2), on the CPU.
    Group ids are integers or names (strings such as video ids); labels are class ids."""
    names, groups = unique_ids(groups, "group ids", "or score per image: classification_report without groups="
                               ) if is_text(groups) else (None, groups)
    logits, labels, groups = (torch.as_tensor(t).detach().cpu() for t in (logits, _class_id_labels(labels), groups))
    labels = class_ids(labels)
    check(groups.dim() == 1 and not groups.is_floating_point(), f"group ids must be a 1-D tensor of integers, got "
                                                                f"shape {tuple(groups.shape)} of {groups.dtype}")
    check(logits.dim() == 2 and len(logits) == len(labels) == len(groups) > 0,
          f"grouped_accuracy needs N x C logits, N labels and N group ids, got {tuple(logits.shape)}, "
          f"{len(labels)} and {len(groups)}")
    check(bool(torch.isfinite(logits).all()), "the logits contain NaN or infinite values (a diverged network?)")
    check(int(labels.min()) >= 0 and int(labels.max()) < logits.shape[1],
          f"labels must lie in [0, {logits.shape[1] - 1}] (one logit per class), found {int(labels.min())}.."
          f"{int(labels.max())}")
    inverse, group_label = group_labels(groups, labels, names)
    probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), 1)  # float64 stays float64
    summed = torch.zeros(len(group_label), probs.shape[1], dtype=probs.dtype).index_add_(0, inverse, probs)
    return fraction_correct(summed.argmax(1), group_label)


def mean_recall(correct: list[int], support: list[int]) -> float:
    """The mean over classes with images of ``correct / support`` (balanced accuracy, from per-class
    counts); of one count pair, the accuracy, its exact fraction."""
    recalls = [c / n for c, n in zip(correct, support) if n > 0]
    check(len(recalls) > 0, f"mean_recall: no class has an image (supports {list(support)[:10]}): no recall to average")
    return sum(recalls) / len(recalls)


def harmonic_mean(seen: float, unseen: float) -> float:
    """GZSL's ``H = 2 s u / (s + u)`` of seen and unseen accuracies (0 when both are 0)."""
    return 0.0 if seen + unseen == 0 else 2 * seen * unseen / (seen + unseen)


def format_mean_se(mean: float, se: float, n: int, scale: float = 100.0, digits: int = 1) -> str:
    """``"mean ± se"`` (both times ``scale``); the mean alone when ``n < 2``, where the
    standard error is undefined (printing ``± 0.0`` would claim no spread)."""
    text = f"{scale * mean:.{digits}f}"
    return text if n < 2 else f"{text} ± {scale * se:.{digits}f}"


def mean_se_text(values: Iterable[float], scale: float = 100.0, digits: int = 1) -> str:
    """:func:`format_mean_se` of ``values``."""
    v = list(values)
    return format_mean_se(*mean_se(v), len(v), scale, digits)


def mean_se(values: Iterable[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / sqrt(n); 0 for one value, whatever it is). Finite values
    are summed exactly (``math.fsum``), and equal ones give their value and a spread of exactly 0 (three seeds
    at 0.7 gave 0.6999999999999998 ± 7.85e-17). Among two or more values, a NaN or infinite one gives a NaN
    standard error (plots draw such gaps; tables take accuracies, which :func:`~transferkit.results.read_results`
    checks)."""
    v = [float(x) for x in values]
    check(len(v) > 0, "mean of no values")
    finite = all(math.isfinite(x) for x in v)
    if finite and all(x == v[0] for x in v):
        return v[0], 0.0
    total = math.fsum if finite else sum  # fsum raises on inf + -inf
    m = total(v) / len(v)
    if len(v) < 2:
        return m, 0.0
    var = total((x - m) ** 2 for x in v) / (len(v) - 1)
    return m, math.sqrt(var / len(v))


def paired_difference(rows: list[dict], a: str, b: str) -> tuple[float, float, int] | None:
    """Mean and standard error over seeds of ``accuracy(a) - accuracy(b)`` from result rows
    (``method``, ``seed``, ``accuracy``), each seed's two rows paired (the same source network
    or label subset); ``None`` when no seed has both."""
    acc = {m: {r["seed"]: r["accuracy"] for r in rows if r["method"] == m} for m in (a, b)}
    for m in (a, b):
        n_rows = sum(r["method"] == m for r in rows)
        check(n_rows == len(acc[m]), f"paired_difference: method {m!r} has {n_rows} rows for {len(acc[m])} seeds; "
                                     f"each seed must appear once (a second row would silently replace the first)")
    seeds = sorted(set(acc[a]) & set(acc[b]))
    if not seeds:
        return None
    mean, se = mean_se(acc[a][s] - acc[b][s] for s in seeds)
    return mean, se, len(seeds)
