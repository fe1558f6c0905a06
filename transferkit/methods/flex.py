"""Flex-tuning: tune the one unit of ``N = N_L o ... o N_1`` that works best (seed 002 §3-§4).

* ``flex`` (Algorithm 1): train ``N_ft-l`` (only unit ``l`` tuned) for every unit and
  ``N_ft-all``, each with early stopping on validation accuracy, and output
  ``argmax_{X in {1..L, all}} a_ft-X`` (accuracy ties: lower validation cross entropy; our
  addition, the seed names no tie rule). It also reports the pick's validation margin over
  the runner-up with its paired standard error (``selection``), to tell a clear pick from
  one inside the validation set's noise. Optional extra candidates: the image-to-image
  units of §5.4 (``image_units=["colour", "stn", "unet"]``).
* ``fast_flex`` (Algorithm 2): train ``N_ft-all``; build the proxy networks
  ``N_prox-l = N_L o .. o [N_ft-all]_l o .. o N_1`` by network surgery (never trained), score
  them on validation (:func:`proxy_accuracies`: one pass of the source network shared by
  all proxies), fine-tune the best unit, output it if ``a_ft-best >= a_ft-all``.
* ``faster_flex`` (Algorithm 3): as ``fast_flex`` with ``N_ft-all`` trained for one epoch
  only, and always output the tuned best unit.

Candidates are independent trainings through :class:`~transferkit.engine.Engine` (each
caches the activations of its frozen prefix); with ``workers > 1`` they run in spawned
worker processes. Results do not depend on ``workers`` when the thread count is pinned
(``OMP_NUM_THREADS``; otherwise the workers split the cores while the parent uses them all,
and floating-point sums differ): every candidate is built in the parent with its own seed
and the engine seeds each training.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

import torch

from ..backbones import ALL_UNITS, EMBEDDING, HEAD, evaluating
from ..engine import FitResult, _as_layout, _train_layout, check_select_metric
from ..errors import TransferkitError, UnknownNameError, check, warn
from ..evaluate import chunk_rows, mean_recall, predict_logits
from ..frozen import MEMO, KeptRows
from ..jobs import map_jobs
from .base import Method, register
from .finetune import FtAll, FtUnit
from .image_unit import IMAGE_UNIT, IMAGE_UNITS, ImageUnit, input_channels, insert_image_unit

ALL = ALL_UNITS  # the ft_all candidate; no unit may have this name


def candidate_method(net, candidate: str, image_lr_mult: float = 1.0, with_head: bool = False) -> Method:
    """The method training candidate ``candidate`` on a copy of ``net``: a unit name,
    ``"all"``, or ``"image:<kind>"`` (trained at ``image_lr_mult`` times the learning rate).
    ``with_head``: a unit candidate trains the head too (seed 002 §3.1: for a head with new
    outputs, "fine-tuning both the unit selected by flex-tuning and the last fully-connected
    layer")."""
    if not candidate.startswith("image:") and getattr(net, "input_shape", None) is not None:
        with contextlib.suppress(TransferkitError):  # one dry run for every copy (the engine reads the shapes)
            net.unit_output_shapes()
    net = copy.deepcopy(net)
    if candidate == ALL:
        return FtAll(net)
    if candidate.startswith("image:"):
        check(not with_head, f"the image-unit candidate {candidate!r} keeps the head fixed, so it cannot train "
                             f"the head's rows for new target classes: leave image_units out, or use target "
                             f"classes the source has")
        return ImageUnit(net, kind=candidate.split(":", 1)[1], lr_mult=image_lr_mult)
    return FtUnit(net, [candidate, HEAD] if with_head and candidate != HEAD else candidate)


def _train(engine, method, target, val):
    fit = engine.fit(method, target=target, val=val)
    return method.net, fit


def train_candidates(jobs: list, workers: int = 1) -> list:
    """Run ``(engine, method, target, val)`` jobs, in this process or in ``workers`` spawned
    processes (:func:`~transferkit.jobs.map_jobs`); returns ``(trained net, FitResult)``
    in job order."""
    results: list = [None] * len(jobs)
    map_jobs(_train, jobs, workers, results.__setitem__)
    return results


@torch.no_grad()
def val_predictions(net, domain) -> tuple[torch.Tensor, float]:
    """``(per-image correctness, mean cross entropy)`` of ``net`` on ``domain`` in eval mode
    (no parameter or statistic changes)."""
    if len(domain) == 0:
        return torch.zeros(0, dtype=torch.bool), math.inf
    dev = next(net.parameters()).device
    with evaluating(net):
        logits = predict_logits(lambda x: net(x.to(dev)).cpu(), domain.images)
    return logits.argmax(1) == domain.labels, float(torch.nn.functional.cross_entropy(logits, domain.labels))


def val_scores(net, domain) -> tuple[float, float]:
    """``(accuracy, mean cross entropy)`` of ``net`` on ``domain`` in eval mode."""
    correct, loss = val_predictions(net, domain)
    return (int(correct.sum()) / len(correct) if len(correct) else 0.0), loss


def selection_margin(correct_best: torch.Tensor, correct_other: torch.Tensor) -> tuple[float, float]:
    """Validation accuracy of the pick minus the runner-up's, and its paired standard error
    over the validation images (both are scored on the same images). A margin within about
    one standard error means the pick is not told apart from the runner-up by this
    validation set (seed 002 §3: the selection error shrinks as ``sqrt(log L / |D_val|)``)."""
    d = correct_best.double() - correct_other.double()
    se = float(d.std() / math.sqrt(len(d))) if len(d) > 1 else math.inf
    # the exact difference of the two fractions (as evaluate.fraction_correct), not a float32 mean's noise
    margin = (int(correct_best.sum()) - int(correct_other.sum())) / len(d) if len(d) else 0.0
    return margin, se


def val_accuracy(net, domain) -> float:
    """Accuracy of ``net`` on ``domain`` in eval mode (no parameter or statistic changes)."""
    return val_scores(net, domain)[0]


def proxy_network(base, donor, unit: str, with_head: bool = False):
    """Network surgery (Algorithm 2 line 4): a copy of ``base`` whose unit ``unit`` (and with
    ``with_head`` its head) is copied from ``donor`` (weights and buffers); nothing is trained."""
    proxy = copy.deepcopy(base)
    for u in {unit, HEAD} if with_head else {unit}:
        proxy.unit(u).load_state_dict(donor.unit(u).state_dict())
    return proxy


@torch.no_grad()
def proxy_accuracies(base, donor, units, domain, batch_size: int | None = None, with_head: bool = False,
                     metric: str = "accuracy") -> dict[str, float]:
    """Validation accuracy of the proxy network of every unit in ``units`` (Algorithm 2
    lines 4-5; ``metric="balanced_accuracy"``: the mean per-class accuracy over the classes
    ``domain`` has, as the engine's ``select_metric``),
    the same numbers as ``val_accuracy(proxy_network(base, donor, u, with_head), domain)``
    at a fraction of the cost: one pass of ``base`` gives each unit's input, so proxy ``u``
    runs only ``donor``'s unit ``u`` and ``base``'s units after it (chunks of ``batch_size``
    images, by default :func:`~transferkit.evaluate.chunk_rows`'s, fewer of large images: only one chunk's
    activations are held). Convolutions run in the channels-last layout on CPU, as the engine trains them
    (about 40 % faster here; the same numbers up to floating-point rounding). The pass of ``base`` runs its
    units as the engine runs a frozen prefix (a copy in the training layout, the engine's chunks), and each
    unit's input is kept in the frozen memo (:class:`~transferkit.frozen.KeptRows`): tuning the unit picked
    then reads the validation images' activations before it instead of running ``base``'s units again."""
    for u in units:
        base.unit(u)  # unknown names fail here, with the known ones
    check(len(domain) > 0, "proxy networks are scored on a labelled validation set; it is empty")
    check_select_metric(metric)
    names = base.unit_names
    dev = next(base.parameters()).device
    layout = _train_layout(base, dev, channels_last=True)
    # base's units as the engine runs a frozen prefix: a copy in the training layout (weights included)
    prefix = base if layout == torch.contiguous_format else copy.deepcopy(base).to(memory_format=layout)
    width = max(domain.num_classes, 1)
    correct = {u: torch.zeros(width, dtype=torch.long) for u in units}  # per class
    last = max((names.index(u) for u in units), default=-1)  # base's units after the last candidate are never read
    rows = chunk_rows(domain.images)
    batch_size = rows if batch_size is None else batch_size
    with evaluating(base), evaluating(prefix), evaluating(donor):  # each submodule gets its own mode back
        beside: list = []  # each unit's input, for the engine's prefix of the unit tuned next, within the limit
        kept = {u: KeptRows(MEMO.key(prefix, domain.images, u) if batch_size == rows else None, len(domain), beside)
                for u in units}
        beside += kept.values()
        for i in range(0, len(domain), batch_size):
            h, y = domain.images[i:i + batch_size].to(dev, copy=True), domain.labels[i:i + batch_size].to(dev)
            for j, u in enumerate(names):  # h is the input of unit u
                nxt = names[j + 1] if j + 1 < len(names) else None
                if u in correct:
                    kept[u].add(i, h)
                    out = donor.forward_units(_as_layout(h.clone(), layout), u, nxt)  # h feeds the source unit next
                    if nxt is not None and with_head:
                        out = donor.forward_units(base.forward_units(out, nxt, EMBEDDING), EMBEDDING)
                    elif nxt is not None:
                        out = base.forward_units(out, nxt)
                    correct[u] += torch.bincount(y[out.argmax(1) == y].cpu(), minlength=width)
                if j == last:
                    break
                h = prefix.forward_units(h, u, nxt)
    for k in kept.values():
        k.store()
    if metric == "accuracy":
        return {u: int(correct[u].sum()) / len(domain) for u in units}
    support = torch.bincount(domain.labels.cpu(), minlength=width).tolist()
    return {u: mean_recall(correct[u].tolist(), support) for u in units}


def candidate_units(net, units) -> list[str] | None:
    """``units`` (a unit name or a list of them; ``None``: every unit) checked against ``net``:
    each a unit of it (an unknown name is refused with the known ones) that holds parameters,
    none twice. Returns them in network order, or ``None`` for every unit."""
    if units is None:
        return None
    check(isinstance(units, (str, Iterable)) and not isinstance(units, (bytes, Mapping)),
          f"units must be a unit name or a list of them, got {units!r}; units are {', '.join(net.unit_names)}")
    units = [units] if isinstance(units, str) else list(units)
    check(len(units) > 0, "units must name at least one unit (leave it out for every unit)")
    twice = sorted({str(u) for u in units if units.count(u) > 1})
    check(not twice, f"units lists {', '.join(twice)} more than once")
    tunable = net.tunable_unit_names()
    for u in units:
        check(isinstance(u, str), f"units are unit names, got {u!r}; units are {', '.join(net.unit_names)}")
        if u not in net.unit_names:
            raise UnknownNameError("unit", u, net.unit_names)
        check(u in tunable, f"unit {u!r} has no parameters to tune; units with parameters: {', '.join(tunable)}")
    return [u for u in net.unit_names if u in units]


class _FlexBase(Method):
    """Shared parts: candidate seeds, adopting the picked network, results. ``units``: the
    candidate units (default every unit with parameters), in network order; ``all`` (ft_all)
    stays a candidate."""

    not_trained_options = ("workers", "keep_candidates")
    api_only_options = ("keep_candidates",)
    needs_validation = True
    picks_unit = True

    def __init__(self, net, workers: int = 1, keep_candidates: bool = False, units: str | Sequence[str] | None = None):
        super().__init__(net)
        check(int(workers) >= 1, f"workers must be >= 1, got {workers}")
        self.image_lr_mult, self.with_head = 1.0, False
        self.workers, self.keep_candidates = int(workers), bool(keep_candidates)
        self.units = candidate_units(net, units)
        self.picked: str | None = None
        self.picked_units: list[str] = []  # the units the picked candidate trained
        self.candidate_nets: dict = {}
        self._extra: dict = {}

    def head_has_new_rows(self, classes):
        self.with_head = True  # every unit candidate trains the head too (candidate_method)

    def unit_candidates(self) -> list[str]:
        """The single units tried: those of ``units``, else every unit with parameters."""
        tunable = self.net.tunable_unit_names()
        return tunable if self.units is None else [u for u in tunable if u in self.units]

    def trainable_units(self):
        """Before fit, none; after, the units the picked candidate tuned (``all``: every unit;
        a unit, with the head when the target has classes the source lacks)."""
        if self.picked is None:
            return []
        return list(getattr(self, "picked_units", None) or self.net.unit_names)  # a model pickled before 2026-12

    def _units_of(self, candidate: str) -> list[str]:
        """The units candidate ``candidate`` tunes (as :func:`candidate_method` builds it)."""
        if candidate == ALL:
            return list(self.net.unit_names)
        if candidate.startswith("image:"):
            return [IMAGE_UNIT]
        return [candidate, HEAD] if self.with_head and candidate != HEAD else [candidate]

    def _adopt(self, net, candidate: str) -> None:
        """Make ``self.net`` (the caller's network object) the picked network, in place; only
        the units ``candidate`` tuned require gradients, as after any other method's fit."""
        if IMAGE_UNIT in net.feature_names and IMAGE_UNIT not in self.net.feature_names:
            insert_image_unit(self.net, copy.deepcopy(net.unit(IMAGE_UNIT)))
        self.net.load_state_dict(net.state_dict())
        self.input_unit = self.net.unit_names[0]
        units = self._units_of(candidate)
        self.picked_units = [u for u in self.net.unit_names if u in units]
        for name in self.net.unit_names:
            for p in self.net.unit(name).parameters():
                p.requires_grad_(name in self.picked_units)
        self.net.eval()

    def _train(self, make_engine, candidates: list[str], target, val, config=None, tag="cand") -> list:
        jobs = []
        for i, c in enumerate(candidates):
            engine = make_engine(f"{tag}-{c.replace(':', '-')}", config)
            seed = engine.seed * 1009 + i  # new modules (image units) get a fixed init
            torch.manual_seed(seed if -2**63 <= seed < 2**64 else seed % 2**64)  # a seed near 2**64 overflowed
            jobs.append((engine, candidate_method(self.net, c, self.image_lr_mult, self.with_head), target, val))
        return train_candidates(jobs, self.workers)

    def extra_results(self):
        return {"picked": self.picked, **self._extra}


@register
class Flex(_FlexBase):
    """Seed 002 Algorithm 1 (flex): one early-stopped training per unit plus ``ft_all``
    (plus optional §5.4 image units), keep the best on validation accuracy. Ties in
    accuracy (frequent with a few hundred validation images) go to the lower validation
    cross entropy, then to the earlier candidate (units in network order, then ``all``,
    then image units). ``image_lr_mult`` scales the learning rate of the image-unit
    candidates (see :class:`~.image_unit.ImageUnit`). ``units`` (a list of unit names; default
    every unit with parameters) restricts the single-unit candidates; ``all`` stays one
    (seed 002 §3.3: the cost grows with the number of candidates L, the selection error as
    ``sqrt(log L / |D_val|)``). ``keep_candidates`` (for the Python API: a run's rows and
    files do not use it) keeps every trained candidate network in ``candidate_nets``
    (memory: one network each)."""

    name = "flex"
    description = "tune each unit separately and ft_all, keep the best on validation (seed 002 Alg. 1)"

    def __init__(self, net, workers: int = 1, image_units=(), keep_candidates: bool = False,
                 image_lr_mult: float = 1.0, units: str | Sequence[str] | None = None):
        super().__init__(net, workers, keep_candidates, units)
        self.image_units = [image_units] if isinstance(image_units, str) else list(image_units or ())
        twice = sorted({k for k in self.image_units if self.image_units.count(k) > 1})
        check(not twice, f"image_units lists {', '.join(map(str, twice))} more than once")
        if self.image_units:
            input_channels(net)  # a network that does not say its channels fails now, not after the other candidates
        for kind in self.image_units:
            if kind not in IMAGE_UNITS:
                raise UnknownNameError("image unit kind", kind, IMAGE_UNITS)
        self.image_lr_mult = float(image_lr_mult)

    def spawned_workers(self) -> int:
        return self.workers  # its candidates (fast_flex and faster_flex train one at a time, in this process)

    def head_has_new_rows(self, classes):
        check(not self.image_units, f"flex's image-unit candidates keep the head fixed, but the target classes "
                                    f"{classes[:10]} are not among the source head's: their rows would never be "
                                    f"trained. Leave image_units out, or use target classes the source has")
        super().head_has_new_rows(classes)

    def candidates(self) -> list[str]:
        return self.unit_candidates() + [ALL] + [f"image:{k}" for k in self.image_units]

    def fit_transfer(self, make_engine, source=None, target=None, unlabeled=None, val=None):
        check(val is not None and len(val) > 0, "flex selects on a labelled validation set; none was given")
        t0 = time.perf_counter()
        cands = self.candidates()
        results = self._train(make_engine, cands, target, val)
        accs = [fit.val_accuracy for _, fit in results]  # of the weights each returns
        # the engine's scoring of the returned weights where it has it (the same images), else a pass
        scored = [(fit.val_correct, fit.val_loss) if fit.val_correct is not None else val_predictions(net, val)
                  for net, fit in results]
        losses = [loss for _, loss in scored]
        ranked = sorted(range(len(cands)), key=lambda i: (accs[i], -losses[i], -i), reverse=True)
        best = ranked[0]
        self.picked = cands[best]
        self._adopt(results[best][0], self.picked)
        if self.keep_candidates:
            self.candidate_nets = {c: net for c, (net, _) in zip(cands, results)}
        self._extra = {"candidate_val_accuracy": dict(zip(cands, accs)),
                       "candidate_val_loss": dict(zip(cands, losses)),
                       "candidate_steps": {c: fit.steps for c, (_, fit) in zip(cands, results)}}
        if len(ranked) > 1:
            margin, se = selection_margin(scored[best][0], scored[ranked[1]][0])
            self._extra["selection"] = {"runner_up": cands[ranked[1]], "margin": margin, "se": se}
        fit = results[best][1]
        return FitResult(steps=sum(f.steps for _, f in results), best_step=fit.best_step,
                         best_val_accuracy=fit.best_val_accuracy, val_accuracy=fit.val_accuracy,
                         stopped_early=fit.stopped_early, wall_s=time.perf_counter() - t0, history=fit.history,
                         val_correct=fit.val_correct, val_loss=fit.val_loss, diverged=fit.diverged)


@register
class FastFlex(_FlexBase):
    """Seed 002 Algorithm 2 (fast-flex): ``N_ft-all``, proxy networks by surgery scored on
    validation, fine-tune the best proxy's unit (proxy ties: the earlier unit), keep it if
    ``a_ft-best >= a_ft-all``. ``units`` (a list of unit names; default every unit with
    parameters) restricts the proxies, hence the units it may tune. ``keep_candidates`` (for the
    Python API: a run's rows and files do not use it) keeps ``N_ft-all`` and the fine-tuned
    unit's network in ``candidate_nets``."""

    name = "fast_flex"
    one_epoch = False
    description = "ft_all, proxy networks by surgery, tune the best unit (seed 002 Alg. 2)"

    def fit_transfer(self, make_engine, source=None, target=None, unlabeled=None, val=None):
        check(val is not None and len(val) > 0, f"{self.name} selects on a labelled validation set; none was given")
        check(target is not None and len(target) > 0, f"{self.name} tunes on labelled target images; none were given")
        t0 = time.perf_counter()
        config, sel_val = None, val
        if self.one_epoch:  # Algorithm 3 line 1: a single epoch, no early stopping
            base = make_engine("config").cfg  # the stage config; this engine is not run
            config = replace(base, steps=math.ceil(len(target) / base.batch_size), patience=None,
                             eval_every=10**9, checkpoint_every=10**9)
            sel_val = None
        (all_net, all_fit), = self._train(make_engine, [ALL], target, sel_val, config, tag="surgery")
        units = self.unit_candidates()
        metric = make_engine("config").select_metric  # what the engine's validation scores too
        proxies = proxy_accuracies(self.net, all_net, units, val, with_head=self.with_head, metric=metric)
        best_unit = max(units, key=lambda u: (proxies[u], -units.index(u)))
        tied = [u for u in units if proxies[u] == proxies[best_unit]]
        tied = tied if len(tied) > 1 else []  # recorded as proxy_tie
        if tied:
            warn(self._tie_message(tied, proxies[best_unit], len(val), all_fit.steps, len(target), config, metric))
        (unit_net, unit_fit), = self._train(make_engine, [best_unit], target, val, tag="tune")
        a_all = None if self.one_epoch else all_fit.val_accuracy  # Algorithm 3 never looks at it
        use_all = not self.one_epoch and a_all > unit_fit.val_accuracy
        self.picked = ALL if use_all else best_unit
        self._adopt(all_net if use_all else unit_net, self.picked)
        if self.keep_candidates:
            self.candidate_nets = {ALL: all_net, best_unit: unit_net}
        self._extra = {"proxy_unit": best_unit, "proxy_val_accuracy": proxies, "ft_all_val_accuracy": a_all,
                       "ft_best_val_accuracy": unit_fit.val_accuracy, "surgery_steps": all_fit.steps,
                       "proxy_tie": tied}
        fit = all_fit if use_all else unit_fit
        return FitResult(steps=all_fit.steps + unit_fit.steps, best_step=fit.best_step,
                         best_val_accuracy=fit.best_val_accuracy, val_accuracy=fit.val_accuracy,
                         stopped_early=fit.stopped_early, wall_s=time.perf_counter() - t0, history=fit.history,
                         val_correct=fit.val_correct, val_loss=fit.val_loss, diverged=fit.diverged)

    def _tie_message(self, tied: list[str], score: float, n_val: int, steps: int, n_target: int, config,
                     metric: str = "accuracy") -> str:
        if self.one_epoch:
            advice = (f"Its donor, ft_all for one epoch, took {steps} step(s) (ceil({n_target} labelled images / "
                      f"batch_size {config.batch_size})), maybe too few to tell the units apart: use fast_flex "
                      f"(its donor trains to early stopping), more labelled target images, or a smaller train "
                      f"batch_size")
        else:
            advice = (f"Its donor, ft_all, trained {steps} step(s): more labelled target or validation images, or "
                      f"more train steps, may tell them apart; flex trains every unit instead")
        count = f"{round(score * n_val)} of {n_val} images" if metric == "accuracy" else f"{n_val} images"
        return (f"{self.name}: the proxies of {', '.join(tied)} tie at the best validation "
                f"{metric.replace('_', ' ')} {100 * score:.1f}% ({count}); the tie goes to the earlier "
                f"unit, {tied[0]}, by rule, not by merit. " + advice)


@register
class FasterFlex(FastFlex):
    """Seed 002 Algorithm 3 (even faster flex): the surgery donor is ``N_ft-all`` after a
    single epoch; the best proxy's unit is fine-tuned and always output. ``keep_candidates``
    (for the Python API: a run's rows and files do not use it) keeps the donor and the
    fine-tuned unit's network in ``candidate_nets``."""

    name = "faster_flex"
    one_epoch = True
    description = "one epoch of ft_all, proxy networks by surgery, tune the best unit (seed 002 Alg. 3)"


__all__ = ["Flex", "FastFlex", "FasterFlex", "candidate_method", "proxy_accuracies", "proxy_network",
           "selection_margin", "train_candidates", "val_accuracy", "val_predictions", "val_scores"]
