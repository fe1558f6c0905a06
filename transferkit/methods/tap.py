"""Layer tapping (seed 001 "Tapping off features at each layer"): frozen features of the
source network taken at the output of every unit, each fed to a linear SVM and to a
softmax (multinomial logistic regression) classifier; accuracy per unit.

Features are flattened and standardised with the training mean and deviation; the
classifiers are scikit-learn's ``LinearSVC`` and ``LogisticRegression``. Both are linear,
so a fitted one is turned into an ``nn.Linear`` on the raw features, ``W' = W / s``,
``b' = b - W' m``, and the ``tap`` method predicts with the unit and classifier that are
best on validation.

Cost: the classifiers' fits dominate. On 1,078 images of 512-d features an SVM fit (liblinear,
up to 5,000 iterations) took about 20 s on one slow CPU core (2026-12, 812 iterations); on
features of many thousand values per image the softmax (lbfgs) takes longer than the SVM (an
audit of 2026-12-07: 7.8 vs 0.9 s for a 28 px run's units, 32 vs 12 s for resnet18's at 128 px),
so a network with several large units takes minutes; a
progress bar counts the fits (``progress``, as the training engine's: by default when
standard error is a terminal or in a Jupyter kernel; the ``tap`` method takes its stage config's). To spend less,
tap fewer units (``units=``) or tap on fewer images; the solver and its settings are kept,
so that results stay those of the docs; a fit that does not converge warns once per tap, naming
its units and classifiers.

Units are taken in network order whatever the order given (ties between units go to the
earlier one); a unit listed twice, or one whose output is no tensor, is refused.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..backbones import check_input_shape, check_unitnet, evaluating
from ..domain import check_labeled, image_batch, labels_by_name
from ..engine import FitResult
from ..errors import check, warn
from ..evaluate import chunk_rows, fraction_correct
from ..frozen import MEMO, KeptRows, frozen_activations
from ..runtime import NoBar, shows_progress
from .base import Method, register

CLASSIFIERS = ("svm", "softmax")
#: the iterations each classifier's solver may take (liblinear's for the SVM, lbfgs's for the softmax)
MAX_ITER = {"svm": 5000, "softmax": 1000}


def tap_units(net, units) -> list[str]:
    """``units`` (a unit name, a list of them, or None: every feature unit) checked against
    ``net``: each a feature unit, none listed twice; returned in network order."""
    if units is None:
        return list(net.feature_names)
    check(isinstance(units, (str, Iterable)) and not isinstance(units, (bytes, Mapping)),
          f"tap: option units must be text or a list of texts or null, got {units!r}; units are {net.feature_names}")
    units = [units] if isinstance(units, str) else list(units)
    check(len(units) > 0, "tap: units must name at least one unit (leave it out for every unit)")
    for u in units:  # an id or other non-text is an unknown unit too, named with the known ones
        check(isinstance(u, str) and u in net.feature_names, f"tap: unknown unit {u!r}; units are {net.feature_names}")
    twice = sorted({u for u in units if units.count(u) > 1})
    check(not twice, f"tap: units lists {', '.join(map(repr, twice))} more than once; list each unit once")
    return [u for u in net.feature_names if u in units]


def _fit_pairs(units: list[str], progress: bool | None):
    """The (unit, classifier) pairs to fit, counted by a progress bar when ``progress`` (None:
    when standard error is a terminal or in a Jupyter kernel)."""
    from tqdm import tqdm

    pairs = [(u, kind) for u in units for kind in CLASSIFIERS]
    show = shows_progress() if progress is None else progress
    return tqdm(pairs, desc="tap: linear fits", leave=False) if show else NoBar(pairs)


@torch.no_grad()
def unit_features(net, images: torch.Tensor, units: list[str], batch_size: int | None = None,
                  what: str = "tap", keep: str | None = None) -> dict[str, torch.Tensor]:
    """``unit -> N x D`` flattened activations of the frozen ``net`` (computed in eval mode;
    each submodule's mode is restored). Images of another shape than ``net.input_shape`` are
    refused (``what`` names them), as are units whose output is no tensor. ``keep``: one of ``units``
    whose activations (before flattening) are stored in the frozen memo as the prefix through it
    (:class:`~transferkit.frozen.KeptRows`), so that a logits pass that stops there reads them; with
    ``batch_size`` :func:`~transferkit.evaluate.chunk_rows`'s, the chunks such a pass runs."""
    if not getattr(net, "input_shape_guessed", False):  # from_modules' guessed 224 x 224 binds nothing
        check_input_shape(net, images, what)
    dev = next(net.parameters()).device
    rows = chunk_rows(images, most=512) if batch_size is None else batch_size  # fewer of large images
    feats: dict[str, torch.Tensor] = {}  # one N x D tensor per unit, filled chunk by chunk
    with evaluating(net):
        names = net.unit_names
        key = MEMO.key(net, images, names[names.index(keep) + 1]) if keep and rows == chunk_rows(images) else None
        kept = KeptRows(key, len(images))
        for i in range(0, max(len(images), 1), rows):  # no image: one empty batch gives each unit's width
            chunk = net.forward_features(images[i:i + rows].to(dev), units)
            for u in units:
                check(isinstance(chunk[u], torch.Tensor), f"tap: unit {u!r} gives a {type(chunk[u]).__name__}, not a "
                                                          f"tensor, and a linear classifier reads a tensor of "
                                                          f"features: leave that unit out (units=) or tap a unit "
                                                          f"that gives one")
                if u == keep:
                    kept.add(i, chunk[u])
                f = chunk[u].flatten(1)
                if u not in feats:
                    feats[u] = torch.empty(len(images), f.shape[1], dtype=f.dtype)
                feats[u][i:i + len(f)] = f
            if i == 0:
                _warn_if_large(feats, what)
    for u, f in feats.items():
        check(bool(torch.isfinite(f).all()), f"tap: the features of unit {u!r} hold NaN or infinite values; check "
                                             f"the network's weights and the images, or leave that unit out (units=)")
    kept.store()
    return feats


#: features (float32, every unit's) of one domain above which tap warns: its linear classifiers hold them
#: again in float64, and more (liblinear's copy)
LARGE_FEATURES_MB = 2048


def _warn_if_large(feats: dict[str, torch.Tensor], what: str) -> None:
    """Warn when the features ``feats`` are allocated for take more than ``LARGE_FEATURES_MB``."""
    mb = sum(f.numel() * f.element_size() for f in feats.values()) / 2**20
    if mb > LARGE_FEATURES_MB:
        widest = ", ".join(f"{u}: {feats[u].shape[1]:,} values per image"
                           for u in sorted(feats, key=lambda u: -feats[u].shape[1])[:3])
        warn(f"{what}: the features of its {len(feats)} unit(s) take {mb:,.0f} MB ({widest}), and each linear "
             f"classifier holds them again in float64: tap fewer or later units (units=[...]) or smaller images")


def fit_linear(kind: str, x: torch.Tensor, y: torch.Tensor, num_classes: int, c: float = 1.0,
               seed: int = 0) -> nn.Linear:
    """Fit a linear SVM (``svm``) or softmax classifier (``softmax``) on standardised ``x`` (a
    column constant on ``x`` standardises to 0: it gets no weight); return it as an ``nn.Linear``
    acting on the raw features. A fit that does not converge warns."""
    lin, converged = _fit_linear(kind, x, y, num_classes, c, seed)
    if not converged:
        warn(f"fit_linear: the {kind} classifier did not converge in {MAX_ITER[kind]:,} iterations; {_CONVERGE_HINT}")
    return lin


def _fit_linear(kind: str, x: torch.Tensor, y: torch.Tensor, num_classes: int, c: float = 1.0,
                seed: int = 0) -> tuple[nn.Linear, bool]:
    """:func:`fit_linear`'s classifier, and whether its solver converged (scikit-learn's
    ConvergenceWarning is caught; other warnings of the fit are issued again)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    check(kind in CLASSIFIERS, f"unknown tap classifier {kind!r} ({', '.join(CLASSIFIERS)})")
    present = len(torch.unique(y))
    check(present >= 2, f"a linear classifier needs at least 2 classes in its training features, "
                        f"got {present} ({len(y)} examples)")
    check(int(y.min()) >= 0 and int(y.max()) < num_classes,
          f"a linear classifier over {num_classes} classes needs labels in [0, {num_classes - 1}], got labels "
          f"from {int(y.min())} to {int(y.max())}; pass num_classes above the largest label ("
          f"{int(y.max()) + 1} here), or renumber the labels 0..C-1")
    check(bool(torch.isfinite(x).all()), "a linear classifier needs finite features; these hold NaN or infinite "
                                         "values")
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    # constant up to a few units in the last place: a float32 mean misses such a column by rounding, and it would
    # stand out as a column of ±1 with a weight up to 1e6 x too large (as scikit-learn's StandardScaler, scale 1)
    lo, hi = torch.aminmax(x, dim=0)  # one pass
    constant = hi - lo <= 8 * torch.finfo(x.dtype).eps * torch.maximum(hi.abs(), lo.abs())
    mean[constant], std[constant] = x[0, constant], 1.0
    xs = np.empty(tuple(x.shape), dtype=np.float64)  # standardised chunk by chunk: no float32 copy of x besides
    step = max(1, 2**22 // max(1, x.shape[1]))
    for i in range(0, len(x), step):
        xs[i:i + step] = ((x[i:i + step] - mean) / std).double().numpy()
    clf = (LinearSVC(C=c, random_state=seed, max_iter=MAX_ITER[kind]) if kind == "svm"
           else LogisticRegression(C=c, max_iter=MAX_ITER[kind], random_state=seed))
    with warnings.catch_warnings(record=True) as caught:  # the outer filters still apply
        clf.fit(xs, y.numpy())
    converged = True
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            converged = False
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    coef, bias = np.atleast_2d(clf.coef_), np.atleast_1d(clf.intercept_)
    if coef.shape[0] == 1:  # two classes: sklearn returns the row of classes_[1]; classes_[0] scores 0, so that
        # softmax gives the model's sigmoid(z) (not sigmoid(2z), which would skew grouped score averages)
        coef, bias = np.concatenate([np.zeros_like(coef), coef]), np.concatenate([np.zeros_like(bias), bias])
    w = torch.zeros(num_classes, x.shape[1], dtype=torch.float64)
    b = torch.full((num_classes,), -1e9, dtype=torch.float64)  # classes absent from training never win
    w[clf.classes_] = torch.from_numpy(coef) / std.double()
    b[clf.classes_] = torch.from_numpy(bias) - w[clf.classes_] @ mean.double()
    lin = nn.Linear(x.shape[1], num_classes, dtype=torch.float32)  # whatever the caller's default dtype
    with torch.no_grad():
        lin.weight.copy_(w.float())
        lin.bias.copy_(b.float())
    return lin, converged


_CONVERGE_HINT = ("its accuracy may be below a converged one's: give a smaller c (stronger regularisation "
                  "converges in fewer iterations: tap(..., c=0.1), Transfer('tap', c=0.1), or options: {tap: {c: "
                  "0.1}} in a run config), or leave that unit out (units=)")


def _warn_unconverged(pairs: list[tuple[str, str]], c: float) -> None:
    """One warning naming the (unit, classifier) pairs whose solver did not converge."""
    named = [f"the {kind} at unit(s) {', '.join(repr(u) for u, k in pairs if k == kind)} (in {MAX_ITER[kind]:,} "
             f"iterations)" for kind in CLASSIFIERS if any(k == kind for _, k in pairs)]
    if named:
        warn(f"tap: the linear classifier did not converge: {'; '.join(named)}, at c={c:g}; {_CONVERGE_HINT}")


def _test_labels(train, test) -> torch.Tensor:
    """``test``'s labels as ids into ``train``'s classes, matched by name; test classes with
    images that ``train`` does not name are refused."""
    fitted, given = list(train.class_names), list(test.class_names)
    unknown = [given[i] for i in test.present_classes() if given[i] not in fitted]
    check(not unknown, f"tap: the test domain {test.name!r} has images of classes {unknown[:10]} that the training "
                       f"domain {train.name!r} does not name (its classes: {fitted[:10]}); the classifiers predict "
                       f"the training classes, matched to the test classes by name: test on those classes "
                       f"(test.select_classes([...])), or give the same classes the same names")
    return labels_by_name(test, fitted)


def tap(net, train, test, units: str | list[str] | None = None, c: float = 1.0,
        progress: bool | None = None) -> list[dict]:
    """Seed 001's table: for each feature unit (default: all), the accuracy on ``test`` of a
    linear SVM and of a softmax classifier trained on ``train``'s frozen features.
    Returns one row per unit, in network order: ``unit``, ``dim``, ``svm_accuracy``,
    ``softmax_accuracy``. Test classes are matched to the training classes by name.
    ``progress``: a bar counting the fits (None: when standard error is a terminal or in a Jupyter kernel)."""
    check_unitnet(net, "tap")
    units = tap_units(net, units)
    check(isinstance(c, (int, float)) and not isinstance(c, bool) and 0 < c < math.inf,
          f"tap: the regularisation strength c must be a finite number > 0, got {c!r}")
    check(len(test) > 0, "tap: the test domain is empty; pass a domain with images to measure the accuracy on")
    check_labeled(train, "tap: the training domain")
    check_labeled(test, "tap: the test domain")
    test_labels = _test_labels(train, test)
    f_train = unit_features(net, train.images, units, what=f"tap: the training domain {train.name!r}")
    f_test = unit_features(net, test.images, units, what=f"tap: the test domain {test.name!r}")
    rows = {u: {"unit": u, "dim": int(f_train[u].shape[1])} for u in units}
    unconverged = []
    for u, kind in _fit_pairs(units, progress):
        lin, converged = _fit_linear(kind, f_train[u], train.labels, train.num_classes, c)
        unconverged += [] if converged else [(u, kind)]
        with torch.no_grad():
            rows[u][f"{kind}_accuracy"] = fraction_correct(lin(f_test[u]).argmax(1), test_labels)
    _warn_unconverged(unconverged, c)
    return list(rows.values())


@register
class Tap(Method):
    """Seed 001 layer tapping as a method: per unit and classifier (linear SVM, softmax) a
    linear model on frozen features; predicts with the pair best on validation. Reports
    ``tap_val_accuracy`` per unit. Without a validation set it picks on the training set
    (with a warning: training accuracy is often 1.0 at every unit, and ties go to the
    earliest in the network) and reports ``tap_train_accuracy`` instead. ``picked`` in its
    results row is ``"unit/classifier"``. :meth:`classifier_input` gives the tapped unit's
    flattened output (``Transfer.transform``)."""

    name = "tap"
    description = "frozen features at every unit -> linear SVM / softmax; best unit on validation (seed 001)"
    min_classes = 2  # a linear classifier tells classes apart
    picks_unit = True

    def __init__(self, net, c: float = 1.0, units: str | Sequence[str] | None = None):  # tap_units checks them
        check_unitnet(net, "tap")
        super().__init__(net)
        self.c = float(c)
        self.units = tap_units(net, units)  # in network order: ties go to the earlier unit
        self.tap_unit: str | None = None
        self.tap_head: nn.Linear | None = None
        self._extra: dict = {}

    def trainable_units(self):
        return []

    def fit_transfer(self, make_engine, source=None, target=None, unlabeled=None, val=None):
        check(target is not None and len(target) > 0, "tap needs labelled target examples")
        t0 = time.perf_counter()
        on_val = val is not None and len(val) > 0
        sel = val if on_val else target
        if not on_val:
            warn("tap: no validation set; the unit and classifier are picked on training accuracy")
        f_train = unit_features(self.net, target.images, self.units, what=f"tap: the target domain {target.name!r}")
        f_sel = unit_features(self.net, sel.images, self.units, what=f"tap: the validation domain {sel.name!r}") \
            if on_val else f_train
        scores, heads, unconverged = {}, {}, []
        progress = None if make_engine is None else make_engine("tap").cfg.progress  # this engine is not run
        for u, kind in _fit_pairs(self.units, progress):
            heads[u, kind], converged = _fit_linear(kind, f_train[u], target.labels, self.net.num_classes, self.c)
            unconverged += [] if converged else [(u, kind)]
            with torch.no_grad():
                scores[u, kind] = fraction_correct(heads[u, kind](f_sel[u]).argmax(1), sel.labels)
        _warn_unconverged(unconverged, self.c)
        self._unit_heads = heads  # every unit's classifiers, for test_results (then dropped)
        best = max(scores, key=lambda k: (scores[k], -self.units.index(k[0])))  # max keeps the first classifier
        self.tap_unit, self.tap_head = best[0], heads[best]
        self._extra = {"tap_unit": best[0], "tap_classifier": best[1], "picked": f"{best[0]}/{best[1]}",
                       f"tap_{'val' if on_val else 'train'}_accuracy": {u: {k: scores[u, k] for k in CLASSIFIERS}
                                                                          for u in self.units}}
        return FitResult(steps=0, best_step=0, best_val_accuracy=scores[best] if on_val else None, stopped_early=False,
                         wall_s=time.perf_counter() - t0)

    def forward(self, images):
        check(self.tap_head is not None, "tap: call fit_transfer first")
        return self.forward_head(self.net.forward_features(images, [self.tap_unit])[self.tap_unit])

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``forward`` in chunks, with the tapped unit's activations read from / stored in
        :mod:`transferkit.frozen` (the network never changes: each label subset scores the same
        test images through it); bit-identical to ``predict_logits(self, images)``."""
        if self.tap_head is None or not self.plain_net("forward_features", "forward_units"):
            return super().logits(images)
        images = image_batch(images, "logits", getattr(self.net, "input_shape", None))  # as Method.logits checks
        self.eval()
        names = self.net.unit_names
        stop = names[names.index(self.tap_unit) + 1]
        return self.sized(lambda: frozen_activations(self.net, images, stop, then=self.forward_head), images)

    def forward_head(self, activations: torch.Tensor) -> torch.Tensor:
        feats = activations.flatten(1)
        return self.tap_head.to(device=feats.device, dtype=feats.dtype)(feats)

    def classifier_input(self, images: torch.Tensor) -> torch.Tensor:
        """The tapped unit's flattened output, what ``tap_head`` reads (the standardisation is
        folded into ``tap_head``: these are the raw activations)."""
        check(self.tap_head is not None, "tap: call fit_transfer first")
        return self.net.forward_features(images, [self.tap_unit])[self.tap_unit].flatten(1)

    @property
    def classifier_input_dim(self) -> int:
        check(self.tap_head is not None, "tap: call fit_transfer first")
        return self.tap_head.in_features

    def extra_results(self):
        return dict(self._extra)

    def test_results(self, test) -> dict:
        """``tap_test_accuracy``: every unit's and classifier's accuracy on ``test`` (seed 001's table:
        which layer transfers; the pick stays the validation's). The classifiers are then dropped, so
        that the saved model holds the picked one only. The tapped unit's activations stay in the
        frozen memo, in the chunks :meth:`logits` runs: scoring ``test`` after this (as a run does)
        does not run the tapped prefix again."""
        heads, self._unit_heads = getattr(self, "_unit_heads", None), None
        if not heads or test is None or len(test) == 0:
            return {}
        keep = self.tap_unit if self.plain_net("forward_features", "forward_units") else None
        feats = unit_features(self.net, test.images, self.units, batch_size=chunk_rows(test.images),
                              what=f"tap: the test domain {test.name!r}", keep=keep)
        with torch.no_grad():
            return {"tap_test_accuracy": {u: {k: fraction_correct(heads[u, k](feats[u]).argmax(1), test.labels)
                                              for k in CLASSIFIERS} for u in self.units}}
