"""Adversarial domain adaptation: ``dann``, ``adda`` (+ ``adda_encoder``), ``confusion``,
``multilayer_adv`` (seed 000 §3.2, §4.3; seed 003; seed 001 slides).

**One engine step, two players.** The engine sums the loss terms and takes one optimiser
step over every trainable parameter. The discriminator must get its gradient only from
its own loss (seed 000 eq. 3) and the encoder only from the encoder loss (eq. 4 or the
confusion loss). Except in DANN, both are computed in ``losses()``:

* the discriminator loss on *detached* features: no gradient reaches the encoder;
* the encoder loss through :func:`~transferkit.losses.frozen_call`, i.e. the discriminator
  run with detached parameters (``torch.func.functional_call``): no gradient reaches the
  discriminator.

This is exactly the simultaneous-gradient form of the alternating GAN update (both players
step on the same batch from the same parameters), costs one extra discriminator forward,
and needs no second optimiser or training loop. DANN uses its own mechanism, the gradient
reversal layer, which gives the same split with one discriminator pass (the encoder
receives ``-λ_p ∂L_d/∂f``).

Every method takes ``layers`` (unit names or ``"embedding"``; activations are flattened and
concatenated for single discriminators); discriminator sizes come from the backbone's
``unit_output_shapes()``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..discriminators import (
    LARGE_DISCRIMINATOR,
    MLPDiscriminator,
    MultiLayerDiscriminator,
    default_layers,
    discriminator_loss,
    inverted_label_loss,
    multilayer_discriminator,
)
from ..errors import check, warn
from ..losses import dann_lambda, frozen_call, grad_reverse
from .adaptation import AdaptationMethod, flat_cat, layer_size, resolve_layers
from .base import check_fixed_options, register


def _beta1(name: str, beta1):
    """Adam's β1 option (None: the optimiser's default, 0.9)."""
    if beta1 is None:
        return None
    check(isinstance(beta1, (int, float)) and not isinstance(beta1, bool) and 0 <= beta1 < 1,
          f"{name}: option beta1 (Adam's first-moment decay) must be a number in [0, 1), got {beta1!r}")
    return float(beta1)


def _mlp_for(net, layers, hidden: int, depth: int) -> MLPDiscriminator:
    size = sum(layer_size(net, n) for n in layers)
    if size * hidden > LARGE_DISCRIMINATOR:
        warn(f"the domain discriminator on {list(layers)} of {getattr(net, 'name', 'this network')} has "
             f"over {size * hidden / 1e6:.0f} M weights in its first layer ({size} inputs x {hidden}; "
             f"{size * hidden * 4 / 2**30:.1f} GiB in float32, before gradients and optimiser state): "
             f"tap a smaller activation with `layers` (e.g. [embedding]) or lower `hidden`")
    return MLPDiscriminator(size, hidden=hidden, depth=depth)


@register
class DANN(AdaptationMethod):
    """Domain-adversarial training (Ganin & Lempitsky 2015; seed 003, seed 001 slides):

        min_{θ_f, θ_y} max_{θ_d}  L_y(source) - λ_p L_d,    L_d = seed 000 eq. 3 on D(f(x)),

    implemented with a gradient reversal layer between the features ``f`` (``layers``,
    default the embedding) and an MLP discriminator: the discriminator descends ``L_d``,
    the features receive ``-λ_p ∂L_d/∂f``. ``λ_p = weight · (2 / (1 + exp(-10 p)) - 1)``
    (``lambda_schedule="dann"``; ``"constant"`` keeps ``weight``), and the learning rate
    follows ``μ_p = μ_0 / (1 + 10 p)^0.75`` (``lr_schedule="dann"``; ``None`` keeps the
    experiment's schedule). Discriminator: an MLP with ``depth`` hidden layers of ``hidden``
    units (500, 2, as ADDA's; ``hidden=100, depth=1`` is the DANN paper's digit one).
    ``optimizer="sgd"`` trains with SGD, ``μ_0 = lr`` (default 0.01, seed 003's) and
    momentum 0.9 (the DANN paper's; seed 003's update has none); by default (and for
    ``optimizer="adam"`` without ``lr``) the experiment's optimiser and learning rate.

    Default ``weight=0.1``, not the papers' 1: chosen on the target *validation* splits of
    syndigits→mnist and mnist→digits (3 seeds, grid weight × schedule × discriminator in
    docs/adaptation.md), where ``weight=1`` lost to the un-adapted network."""

    name = "dann"
    description = "domain-adversarial training with a gradient reversal layer (seed 003)"

    def __init__(self, net, weight: float = 0.1, layers=None, lambda_schedule: str = "dann",
                 lr_schedule: str | None = "dann", hidden: int = 500, depth: int = 2,
                 entmin_weight: float = 0.0, optimizer: str | None = None, lr: float | None = None):
        super().__init__(net, entmin_weight=entmin_weight)
        override = {} if optimizer is None else {"optimizer": optimizer, "momentum": 0.9}
        if lr is not None or optimizer == "sgd":
            override["lr"] = float(0.01 if lr is None else lr)
        self.optimizer_override = override
        self.weight, self.lambda_schedule, self.lr_schedule = float(weight), lambda_schedule, lr_schedule
        self.layers = resolve_layers(net, layers, ["embedding"])
        self.discriminator = _mlp_for(net, self.layers, hidden, depth)

    def coefficient(self, progress: float) -> float:
        return self.weight * (dann_lambda(progress) if self.lambda_schedule == "dann" else 1.0)

    def losses(self, batch):
        (x_s, y_s), x_t = batch.source, batch.unlabeled
        src, tgt = self.taps(x_s, x_t, self.layers)
        f = grad_reverse(torch.cat([flat_cat(src, self.layers), flat_cat(tgt, self.layers)]),
                         self.coefficient(batch.progress))
        logit = self.discriminator(f)
        terms = self.base_terms(src["head"], y_s, tgt["head"])
        terms["domain"] = discriminator_loss(logit[: len(x_s)], logit[len(x_s):])
        return terms


@register
class DomainConfusion(AdaptationMethod):
    """Domain confusion (Tzeng et al. 2015): the discriminator minimises seed 000 eq. 3; the
    encoder minimises the cross entropy between the discriminator's output and the uniform
    distribution over the two domains,

        L_conf = -mean_{x ∈ s ∪ t} ½ (log d(x) + log(1 - d(x)))

    (the mean over the joined batch), weighted by ``weight``, plus the source cross entropy.
    (The paper's soft-label transfer term is not included.)"""

    name = "confusion"
    description = "domain confusion: uniform-target loss on the domain classifier (Tzeng 2015)"

    def __init__(self, net, weight: float = 0.1, layers=None, hidden: int = 500, depth: int = 2,
                 entmin_weight: float = 0.0):
        super().__init__(net, entmin_weight=entmin_weight)
        self.weight = float(weight)
        self.layers = resolve_layers(net, layers, ["embedding"])
        self.discriminator = _mlp_for(net, self.layers, hidden, depth)

    def losses(self, batch):
        (x_s, y_s), x_t = batch.source, batch.unlabeled
        src, tgt = self.taps(x_s, x_t, self.layers)
        f_s, f_t = flat_cat(src, self.layers), flat_cat(tgt, self.layers)
        terms = self.base_terms(src["head"], y_s, tgt["head"])
        terms["disc"] = discriminator_loss(self.discriminator(f_s.detach()), self.discriminator(f_t.detach()))
        logit = frozen_call(self.discriminator, torch.cat([f_s, f_t]))
        uniform = 0.5 * (F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
                         + F.binary_cross_entropy_with_logits(logit, torch.zeros_like(logit)))
        terms["confusion"] = self.weight * uniform
        return terms


@register
class ADDA(AdaptationMethod):
    """Adversarial discriminative domain adaptation (Tzeng et al. 2017; seed 000 §4.3).

    Step 1 is the source pre-training shared by every method. Step 2 (this method): a copy
    of the source network is kept fixed as the source encoder ``E^s``; the target encoder
    ``E^t`` is initialised from it and trained with the inverted-label loss (seed 000 eq. 4,
    target term ``-E_t[log d^t]``) while an MLP discriminator learns eq. 3 on
    ``E^s(x^s)`` versus ``E^t(x^t)``.

    ``variant="full"`` (ADDA as in seed 000 Table 3: "optimizes encoder and classifier
    simultaneously"): the discriminator reads the classifier output (``layers=["head"]``)
    and every unit of ``E^t`` is trained. ``variant="encoder_only"``: the discriminator reads the
    embedding and the classifier stays the source one; transferkit's single-layer ablation, not a row of
    seed 000 Table 3 (§4.3's "similar method, but optimize encoder only" is the seed's own multi-layer
    model, :class:`MultiLayerADDA`). No source label is used unless
    ``source_weight > 0`` (then the source cross entropy through ``E^t`` is added).
    ``lr_mult`` (default 0.2: ADDA's 2e-4 for the experiment's 1e-3) scales the learning
    rate of the target encoder and the discriminator, and ``beta1`` (default 0.5, ADDA's
    code: ``AdamOptimizer(lr, 0.5)``) is Adam's β1 for both. With Adam's usual 0.9 the
    two-player game oscillates: on syndigits→mnist, seed 0, the target validation accuracy
    of ``adda_encoder`` swung between 0.20 and 0.65 over 1,000 steps (0.64 → 0.75 with 0.5;
    docs/adaptation.md, "ADDA's Adam β1")."""

    name = "adda"
    description = "ADDA: fixed source encoder, target encoder trained against a discriminator"
    revision, revision_note = 1, "Adam's beta1 0.9 until 2026-12-01, ADDA's 0.5 since"
    frozen_children = ("source_net",)

    def __init__(self, net, variant: str = "full", layers=None, weight: float = 1.0, hidden: int = 500,
                 depth: int = 2, source_weight: float = 0.0, lr_mult: float = 0.2, entmin_weight: float = 0.0,
                 beta1: float | None = 0.5):
        super().__init__(net, entmin_weight=entmin_weight, source_weight=source_weight)
        check(variant in ("full", "encoder_only"), f"variant must be full or encoder_only, got {variant!r}")
        self.variant, self.weight, self.lr_mult = variant, float(weight), float(lr_mult)
        self.beta1 = _beta1(self.name, beta1)
        self.layers = resolve_layers(net, layers, ["head"] if variant == "full" else ["embedding"])
        self.source_net = copy.deepcopy(net).eval()
        self.source_net.requires_grad_(False)
        self.discriminator = _mlp_for(net, self.layers, hidden, depth)

    def trainable_units(self):
        return list(self.net.unit_names) if self.variant == "full" else list(self.net.feature_names)

    def param_groups(self):
        return [dict(g, lr_mult=self.lr_mult, beta1=self.beta1) for g in super().param_groups()]

    @torch.no_grad()
    def source_features(self, x: torch.Tensor) -> torch.Tensor:
        """``E^s(x)`` at ``layers``, flattened (the fixed source encoder, eval mode)."""
        return flat_cat(self.source_net.forward_features(x, self.layers), self.layers)

    def cache_inputs(self, inputs):
        """``E^s`` never changes: its features of every source image are computed once per fit."""
        return self.cache_stream(inputs, "source_features", self.source_features, self.source_net)

    def losses(self, batch):
        (x_s, y_s), x_t = batch.source, batch.unlabeled
        f_s = self.cached_rows("source_features", batch.indices.get("source"), lambda: self.source_features(x_s))
        names = list(dict.fromkeys(self.layers + ["head"]))
        if self.source_weight:
            src, tgt = self.taps(x_s, x_t, names)
        else:
            src, tgt = None, self.net.forward_features(x_t, names)
        f_t = flat_cat(tgt, self.layers)
        terms = self.base_terms(src["head"] if src else None, y_s, tgt["head"])
        terms["disc"] = discriminator_loss(self.discriminator(f_s), self.discriminator(f_t.detach()))
        logit_t = frozen_call(self.discriminator, f_t)
        terms["adv_target"] = self.weight * F.binary_cross_entropy_with_logits(logit_t, torch.ones_like(logit_t))
        return terms


@register
class ADDAEncoderOnly(ADDA):
    """``adda`` with ``variant="encoder_only"``: classifier fixed, one discriminator on the
    embedding. transferkit's single-layer ablation of seed 000 §4.3's encoder-only model, which
    is multi-layer (``multilayer_adda``); seed 000 Table 3 has no such row."""

    name = "adda_encoder"
    description = "ADDA, encoder only: classifier fixed, adversarial on the embedding (single-layer multilayer_adda)"

    fixed_options = {"variant": ("encoder_only", "adda_encoder is ADDA's encoder_only variant; for variant={given!r} "
                                                 "use adda")}

    def __init__(self, net, variant: str = "encoder_only", **options):
        check_fixed_options(type(self), {"variant": variant})
        super().__init__(net, variant=variant, **options)


@register
class MultiLayerAdversarial(AdaptationMethod):
    """Multi-layer domain adversarial loss (seed 000 §3.2, §4.3 "Ours").

    The discriminator (:func:`~transferkit.discriminators.multilayer_discriminator`) reads
    the activations ``E_1..E_L`` of ``layers`` (default: the last three units, or the second
    and third last when source and target classes differ, seed 000 implementation details;
    ``same_label_space`` true / false forces one) and
    computes ``d_l = D_l(σ(γ d_{l-1} ⊕ E_l(x)))`` (eq. 2; ``gamma`` = γ, default 0.1 as in
    §4.3; ``combine`` = ⊕, ``"sum"`` or ``"concat"``). ``discriminator``: ``"fc"`` (Tables
    5, 8; ``hidden`` 500 and ``tail_depth`` per backbone), ``"conv"`` (Table 6: 3×3
    convolutions between feature maps, one pass over both domains for its BatchNorm) or
    ``"auto"`` (fully connected unless that exceeds 100 M weights, as on ResNets). The discriminator minimises eq. 3;
    the encoder minimises ``weight`` × eq. 4 (inverted labels, both domains) plus the source
    cross entropy. Source and target share the encoder (``E^s = E^t``), which is why eq. 4's
    source term carries gradient. ``weight`` defaults to seed 000's α = 0.1.

    ``untied=True`` is seed 000's own form of its UDA experiment (§3: "initialize the target
    model with the source parameters"; §4.3: ADDA's two-step strategy, "optimize encoder
    only", "no classifier in the last layer (i.e. perform domain adversarial training in
    feature space)"): a copy of the source network stays fixed and gives the source
    activations (computed once per fit); the network is the target model, whose feature
    units (not the classifier) are trained on ``weight`` × eq. 4 alone (eq. 1 without target
    labels: no source cross entropy; eq. 4's source term is then constant); ``layers``
    defaults to the last three feature units. :class:`MultiLayerADDA` (``multilayer_adda``)
    runs it with ADDA's training strategy, as §4.3 says ("the same training strategy ... as
    [64]"): ADDA's learning rate (``lr_mult`` 0.2, as :class:`ADDA`), constant. With
    ``untied``, ``same_label_space`` is refused (the layers are feature units either way).
    ``lr_mult`` (default 1) scales the learning rate of the network and the discriminator,
    and ``beta1`` (default None: the optimiser's 0.9) sets Adam's β1 for both
    (``multilayer_adda``: ADDA's 0.5).

    ``lr_schedule`` (default ``"dann"``: ``μ_p = μ_0 / (1 + 10 p)^0.75`` as for
    :class:`DANN`; ``None`` keeps the experiment's schedule) is our addition, chosen on the
    target *validation* splits of syndigits→mnist and mnist→digits (docs/adaptation.md);
    seed 000 gives no schedule."""

    unit_interval_options = ("gamma",)  # the decay of eq. 2
    name = "multilayer_adv"
    description = "multi-layer domain adversarial loss (seed 000 §3.2 eq. 2-4)"

    def __init__(self, net, weight: float = 0.1, layers=None, gamma: float = 0.1, combine: str = "sum",
                 same_label_space: bool | None = None, discriminator: str = "auto", hidden: int | None = None,
                 tail_depth: int | None = None, lr_schedule: str | None = "dann", entmin_weight: float = 0.0,
                 untied: bool = False, lr_mult: float = 1.0, beta1: float | None = None):
        check(isinstance(untied, bool), f"{self.name}: option untied must be true or false, got {untied!r}")
        super().__init__(net, entmin_weight=entmin_weight, source_weight=0.0 if untied else 1.0)
        self.untied, self.lr_mult = untied, float(lr_mult)
        check(self.lr_mult > 0, f"{self.name}: option lr_mult must be > 0, got {lr_mult}")
        self.beta1 = _beta1(self.name, beta1)
        if untied:  # E^s: the pre-trained network, fixed; self.net is E^t, initialised from it
            self.source_net = copy.deepcopy(net).eval().requires_grad_(False)
            self.frozen_children = ("source_net",)
        check(same_label_space is None or isinstance(same_label_space, bool),
              f"multilayer_adv: option same_label_space must be true or false (or null: decided from the "
              f"classes), got {same_label_space!r}")
        check(not (untied and same_label_space is not None),
              f"{self.name}: option same_label_space chooses between the logits and the units before them; the "
              f"untied form reads feature units only (give layers to choose them)")
        self.weight, self.lr_schedule = float(weight), lr_schedule
        # decided in prepare() from the classes; untied: in feature space, whatever the classes
        self._auto_layers = layers is None and same_label_space is None and not untied
        default = list(net.feature_names[-3:]) if untied else default_layers(net, same_label_space is not False)
        self.layers = resolve_layers(net, layers, default)
        kw = {} if tail_depth is None else {"tail_depth": tail_depth}
        self._disc_args = (discriminator, {"gamma": gamma, "combine": combine, "hidden": hidden, **kw})
        self._build_discriminator()
        if hidden == 500 and isinstance(self.discriminator, MultiLayerDiscriminator):
            self.init_options.pop("hidden", None)  # the fc default (and the option's default before 2026-11-29)
            given = self.init_options.get("options", {})  # given to a subclass's **options
            given.pop("hidden", None)
            if not given:  # an empty **options is recorded as none, as without hidden
                self.init_options.pop("options", None)

    def extra_results(self) -> dict:
        """The discriminator's layers as the fit resolved them (seed 000's rule, or those given)."""
        return {**super().extra_results(), "layers": list(self.layers)}

    def _build_discriminator(self) -> None:
        kind, kw = self._disc_args
        self.discriminator = multilayer_discriminator(self.net, self.layers, kind, **kw)

    def prepare(self, domains: dict) -> None:
        """Seed 000's rule when ``same_label_space`` is not given: the last three layers when
        source and target have the same classes (by name, in any order), else the second and
        third last (the discriminator is rebuilt for them before training). The target's classes
        are those of the labelled ``target`` when one is given (its labels are not read), else
        those of ``unlabeled``; unlabelled images without labels (``Domain.unlabeled``) name no
        classes, and the label spaces are then taken to be the same. Class names of ``unlabeled``
        that look like placeholders (one class, or none the source has) warn."""
        super().prepare(domains)
        source, target, unlabeled = domains.get("source"), domains.get("target"), domains.get("unlabeled")
        target = target if target is not None and target.labeled else None
        if target is None and unlabeled is not None and unlabeled.labeled:
            target = unlabeled
            if self._auto_layers and source is not None and (
                    len(target.class_names) == 1 or not set(target.class_names) & set(source.class_names)):
                warn(f"{self.name}: it decides the layers from the class names of the unlabeled domain "
                     f"{target.name!r}, {target.class_names[:10]}, which look like placeholders (one class, or none "
                     f"of the source's); if they are, give target= (labelled; its labels are not read), unlabelled "
                     f"images as Domain.unlabeled(name, images), or the option same_label_space")
        if self._auto_layers and source is not None and target is not None and \
                set(source.class_names) != set(target.class_names):  # label spaces: the order does not matter
            self.layers = default_layers(self.net, False)
            self._build_discriminator()
            self._auto_layers = False

    def trainable_units(self):
        """``untied``: the target encoder (feature units); the classifier stays the source one."""
        return list(self.net.feature_names) if self.untied else super().trainable_units()

    def param_groups(self):
        """``lr_mult`` scales the learning rate of the network and the discriminator;
        ``beta1`` is Adam's β1 for both."""
        groups = super().param_groups()
        if self.lr_mult != 1.0:
            groups = [dict(g, lr_mult=self.lr_mult) for g in groups]
        return groups if self.beta1 is None else [dict(g, beta1=self.beta1) for g in groups]

    @torch.no_grad()
    def source_taps(self, x: torch.Tensor) -> dict:
        """``E^s(x)`` at ``layers`` (``untied``: the fixed source network, eval mode)."""
        return self.source_net.forward_features(x, self.layers)

    def cache_inputs(self, inputs):
        """``untied``: ``E^s`` never changes, so its activations of every source image are
        computed once per fit."""
        if not self.untied:
            return {}
        return self.cache_stream(inputs, "source_taps", self.source_taps, self.source_net)

    def losses(self, batch):
        (x_s, y_s), x_t = batch.source, batch.unlabeled
        if self.untied:
            src = self.cached_rows("source_taps", batch.indices.get("source"), lambda: self.source_taps(x_s))
            tgt = self.net.forward_features(x_t, list(dict.fromkeys(self.layers + ["head"])))
            terms = self.base_terms(None, y_s, tgt["head"])
        else:
            src, tgt = self.taps(x_s, x_t, self.layers)
            terms = self.base_terms(src["head"], y_s, tgt["head"])
        a_s, a_t = [src[n] for n in self.layers], [tgt[n] for n in self.layers]
        d_s, d_t = self.discriminator([a.detach() for a in a_s], [a.detach() for a in a_t])
        terms["disc"] = discriminator_loss(d_s, d_t)
        if self.untied and not self.discriminator.joint_batch:  # the fixed source half of eq. 4: no gradient
            terms["adv_encoder"] = self.weight * inverted_label_loss(d_s.detach(), frozen_call(self.discriminator, a_t))
        else:
            terms["adv_encoder"] = self.weight * inverted_label_loss(*frozen_call(self.discriminator, a_s, a_t))
        return terms


@register
class MultiLayerADDA(MultiLayerAdversarial):
    """``multilayer_adv`` with ``untied=True``: seed 000 §4.3's form (a fixed source network;
    the target encoder, initialised from it, trained on α × eq. 4 alone with the discriminator
    on its last three feature units; the classifier kept) and ADDA's training strategy, which
    §4.3 follows: ADDA's learning rate (``lr_mult`` 0.2 of the experiment's 10⁻³, as
    :class:`ADDA`), ADDA's Adam β1 (``beta1`` 0.5) and a constant schedule
    (``lr_schedule="constant"``). (Run at seed 000's general
    10⁻³ first, it collapsed to one class on every job of the benchmark; docs/adaptation.md.)"""

    name = "multilayer_adda"
    fixed_options = {"untied": (True, "multilayer_adda is multilayer_adv's untied form; for untied={given!r} use "
                                      "multilayer_adv")}
    revision, revision_note = 1, "Adam's beta1 0.9 until 2026-12-01, ADDA's 0.5 since"
    description = "multi-layer domain adversarial loss, seed 000 §4.3's form: fixed source net, encoder only"

    def __init__(self, net, untied: bool = True, lr_mult: float = 0.2, lr_schedule: str | None = "constant",
                 beta1: float | None = 0.5, **options):
        check_fixed_options(type(self), {"untied": untied})
        super().__init__(net, untied=True, lr_mult=lr_mult, lr_schedule=lr_schedule, beta1=beta1, **options)
