"""Rich representations for transfer (seed 004, Zhang & Bottou 2023, "Learning useful
representations for shifting tasks and distributions").

* :func:`cat_network` -- ``CAT_n``: ``n`` networks trained on the source with different
  seeds, ``phi_CAT(x) = [phi_1(x), ..., phi_n(x)]`` (feature size ``sum_i D_i``), as a
  :class:`~transferkit.backbones.UnitNet` with one feature unit ``cat`` and a linear head,
  so every existing method applies: ``linear_probe`` (seed 004 "linear probing:
  concatenate these representations and learn a big linear classifier on top"), ``finetune``
  ("normal fine-tuning": ``[init]cat``).
* :class:`CatTwoStage` (``cat_two_stage``) -- "fine-tune each pretrained representation on
  target tasks separately, then concatenate the representation and apply linear probing"
  (``[2ft]cat``).
* :class:`Distill` (``distill``) -- ``DISTILL_n``: one network of the base size whose
  representation ``f`` must reproduce the outputs of every member through its own linear
  head, ``L = CE(h_0(f(x)), y) + T^2 sum_i KL(softmax(t_i(x) / T) || softmax(h_i(f(x)) / T))``.
* :func:`source_members` -- ``n`` source networks with seeds ``seed, seed + 1, ...``, trained
  and cached by :func:`~transferkit.source.pretrain_source`.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbones import HEAD, UnitNet
from .engine import FitResult
from .errors import TransferkitError, check, is_whole
from .heads import make_head
from .methods.base import Method, register
from .methods.finetune import Finetune


class ConcatFeatures(nn.Module):
    """``x -> [phi_1(x), ..., phi_n(x)]``: the embeddings of member UnitNets, concatenated."""

    def __init__(self, members):
        super().__init__()
        check(len(members) >= 1, "CAT needs at least one member network")
        bad = [type(m).__name__ for m in members if not isinstance(m, UnitNet)]
        check(not bad, f"CAT members must be UnitNets (transferkit backbones), got {bad}")
        check(len({id(m) for m in members}) == len(members), "CAT members must be distinct networks: one module "
                                                             "appears twice (seed 004 concatenates independently "
                                                             "trained networks)")
        shapes = [m.input_shape for m in members]
        check(len({s for s in shapes if s is not None}) <= 1,
              f"CAT members must take the same images, got input shapes {shapes}")
        self.members = nn.ModuleList(members)

    @property
    def dims(self) -> list[int]:
        return [m.embed_dim for m in self.members]

    def forward(self, x):
        return torch.cat([m.forward_features(x) for m in self.members], 1)


def cat_network(members, num_classes: int | None = None, name: str | None = None, seed: int | None = None) -> UnitNet:
    """``CAT_n`` of ``members`` (modules are shared, not copied): one feature unit ``cat`` and a
    new linear head over ``sum_i D_i`` features (``num_classes`` defaults to the members'); it
    binds the image shape that any member binds. With ``seed`` the head's initial weights come
    from that seed alone (the global random state is neither read nor advanced); without it,
    from the global random state."""
    feats = ConcatFeatures(members)
    check(num_classes is None or is_whole(num_classes, 1), f"num_classes must be a whole number >= 1, got "
                                                           f"{num_classes!r}")
    n_cls = num_classes or members[0].num_classes
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.default_generator.manual_seed(seed)  # the head is built on the CPU
        head = make_head("linear", sum(feats.dims), n_cls)
    shape = next((m.input_shape for m in members if m.input_shape is not None), None)  # ConcatFeatures: one at most
    return UnitNet({"cat": feats}, head, name=name or f"cat{len(members)}", input_shape=shape)


def source_members(cfg, data, n: int, log=print, pin_dir=None) -> list[UnitNet]:
    """``n`` source networks trained with seeds ``cfg.seed + i`` (each cached on disk). With
    ``pin_dir``, member ``i`` is pinned in ``pin_dir/member<i>`` the first time and read from
    there after (:func:`~transferkit.source.run_source_network`): a resumed benchmark keeps
    its members even where the cache would pre-train others (other threads, a cleared cache)."""
    from .source import pretrain_source, run_source_network

    check(n == 1 or not getattr(cfg, "pretrained", None), f"CAT_{n} needs {n} source networks trained with "
                                                           f"different seeds; a pretrained: file is one network")
    members = []
    for i in range(n):
        member_cfg = dataclasses.replace(cfg, seed=cfg.seed + i)
        if pin_dir is None:
            members.append(pretrain_source(member_cfg, data, log)[0])
            continue
        where = member_dir(pin_dir, i)
        where.mkdir(parents=True, exist_ok=True)
        members.append(run_source_network(member_cfg, data, where, log)[0])
    return members


def member_dir(pin_dir, i: int) -> Path:
    """Where :func:`source_members` pins member ``i``: its ``source.safetensors`` and record ``source.json``
    (``diverged: true`` where its pre-training diverged)."""
    return Path(pin_dir) / f"member{i}"


@register
class CatTwoStage(Method):
    """Two-stage fine-tuning over ``CAT_n`` (seed 004 ``[2ft]cat``): stage 1 fine-tunes every
    member separately on the target (tag ``member<i>``), as ``two_stage`` fine-tunes one
    network: from the member's own head when it has one output per target class (its source
    head, when the classes are the same; ``bench represent`` first gives each member the
    rows of the target classes, :func:`~transferkit.fitting.retarget_head`), else from a
    new head; stage 2 trains a new linear head on the concatenated fine-tuned features (tag
    ``probe``). ``net`` must come from :func:`cat_network`. Reports ``member_val_accuracy``."""

    name = "cat_two_stage"
    description = "fine-tune each CAT member on the target, concatenate, linear probe (seed 004)"

    def __init__(self, net):
        super().__init__(net)
        check("cat" in net.unit_names and isinstance(net.unit("cat"), ConcatFeatures),
              "cat_two_stage needs a network built by transferkit.represent.cat_network (several source "
              "networks): Transfer('cat_two_stage').fit(..., net=cat_network([net1, net2])), or `transferkit "
              "bench represent`; a config cannot give one")
        self._extra: dict = {}

    def trainable_units(self):
        return [HEAD]

    def losses(self, batch):
        return {"ce_target": self.supervised(batch.target)}

    def fit_transfer(self, make_engine, source=None, target=None, unlabeled=None, val=None):
        t0 = time.perf_counter()
        accs, history, steps, diverged = [], [], 0, False
        for i, member in enumerate(self.net.unit("cat").members):
            if member.num_classes != self.net.num_classes:
                member.reset_classifier(self.net.num_classes)
            fit = Finetune(member).fit_transfer(lambda tag, config=None, i=i: make_engine(f"member{i}", config),
                                                target=target, val=val)
            accs.append(fit.val_accuracy)
            history += fit.history
            steps += fit.steps
            diverged = diverged or fit.diverged
        self.net.reset_classifier(self.net.num_classes)
        probe = make_engine("probe").fit(self, target=target, val=val)
        self._extra = {"member_val_accuracy": accs}
        return FitResult(steps=steps + probe.steps, best_step=probe.best_step,
                         best_val_accuracy=probe.best_val_accuracy, val_accuracy=probe.val_accuracy,
                         stopped_early=probe.stopped_early, wall_s=time.perf_counter() - t0,
                         history=history + probe.history, diverged=diverged or probe.diverged)

    def extra_results(self):
        return dict(self._extra)


@register
class Distill(Method):
    """Distil ``CAT_n`` into ``net`` (a fresh network of the base size): seed 004's ``DISTILL_n``
    (README, Fig. 1: "obtained by distilling CATn into one ResNet50"; Fig. 3), with

        L = ce_weight · CE(h_0(f(x)), y) + T² Σ_i KL(softmax(t_i(x) / T) || softmax(h_i(f(x)) / T))

    (the seed names no loss: this is Hinton et al.'s, one student head ``h_i`` per member ``t_i``).
    ``teacher``: the members (frozen, eval mode; one network is one member); ``temperature``: ``T``."""

    name = "distill"
    streams = ("source",)
    needs_pretrained = False
    cache_frozen_prefix = False
    description = "distil the concatenated CAT representation into one base-size network (seed 004)"

    def __init__(self, net, teacher=(), temperature: float = 2.0, ce_weight: float = 1.0):
        super().__init__(net)
        teacher = [teacher] if isinstance(teacher, UnitNet) else teacher  # one member: CAT_1
        check(len(teacher) >= 1, "distill needs the teacher members, source networks: Transfer('distill', "
                                  "teacher=[net1, net2]).fit(...), or `transferkit bench represent`; a config "
                                  "cannot give them")
        for i, t in enumerate(teacher):
            check(isinstance(t, UnitNet), f"distill: teacher {i} must be a UnitNet (a source network), got "
                                          f"{type(t).__name__}")
            shape = getattr(t, "input_shape", None)
            if shape is not None and net.input_shape is not None and tuple(shape) != tuple(net.input_shape):
                raise TransferkitError(
                    f"distill: teacher {i} takes images of shape {tuple(shape)} but the student takes "
                    f"{tuple(net.input_shape)}; build the student for the teachers' images (same channels and "
                    f"size, e.g. in_channels=data.channels)")
        self.teacher = nn.ModuleList(teacher)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.student_heads = nn.ModuleList(
            make_head("linear", net.embed_dim, t.num_classes) for t in self.teacher)
        self.temperature, self.ce_weight = temperature, ce_weight

    def param_groups(self):
        return [{"params": self.net.parameters_of(self.trainable_units())},
                {"params": list(self.student_heads.parameters())}]

    def train_mode(self):
        super().train_mode()
        self.teacher.eval()

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> dict:
        return {str(i): m(x) for i, m in enumerate(self.teacher)}

    def cache_inputs(self, inputs):
        """The members are fixed: their logits of every source image are computed once per fit."""
        return self.cache_stream(inputs, "teacher_logits", self.teacher_logits, self.teacher)

    def losses(self, batch):
        x, y = batch.source
        f = self.net.forward_features(x)
        t = self.temperature
        logits = self.cached_rows("teacher_logits", batch.indices.get("source"), lambda: self.teacher_logits(x))
        targets = [F.softmax(logits[str(i)] / t, 1) for i in range(len(self.teacher))]
        kd = sum(F.kl_div(F.log_softmax(h(f) / t, 1), p, reduction="batchmean")
                 for h, p in zip(self.student_heads, targets)) * t * t
        return {"ce_source": self.ce_weight * self.cross_entropy(self.net.head(f), y, "source"), "kd": kd}

    def student(self) -> UnitNet:
        """The distilled network (its own head; the member heads are dropped)."""
        return self.net


def distill_network(members, make_net, make_engine, source, val, **options) -> tuple[UnitNet, FitResult]:
    """Train ``DISTILL_n``: ``make_net()`` gives a fresh base-size network, ``make_engine(tag,
    config=None)`` the engine (called with the tag ``"distill"``, as ``fit_transfer`` calls its
    engines); returns the distilled network and the fit result."""
    method = Distill(make_net(), teacher=[copy.deepcopy(m).eval() for m in members], **options)
    fit = make_engine("distill").fit(method, source=source, val=val)
    return method.student(), fit
