"""Episodic N-way K-shot evaluation of frozen features with the few-shot heads of seed 004
(after Chen et al. 2019, "A closer look at few-shot classification").

An episode draws ``N`` classes, ``K`` support and ``Q`` query images per class; a head is fit
on the support features and scored on the queries. On grouped samples (the frames of videos)
every support and query image of an episode comes from a group of its own (``K + Q`` groups per
class, one frame of each), so that no query has a near-copy among the support images. Heads:

* ``linear`` (Baseline): ``logits = W f + b``, fit by full-batch Adam on the support set;
* ``cosine`` (Baseline++): ``logits = s cos(w_c, f)`` (fixed scale ``s``), fit the same way;
* ``prototype``: ``logits = -||f - p_c||^2`` with ``p_c`` the support mean of class ``c``
  (:func:`~transferkit.heads.prototype_logits`).

All episodes are processed at once: indices are ``E x N x K`` tensors and the per-episode
heads are ``E x N x D`` weights trained with ``bmm``. The report is the mean accuracy over
episodes and the 95 % interval ``1.96 * std / sqrt(E)`` (600 episodes by default; NaN for one).
"""

from __future__ import annotations

import hashlib
import math
import numbers
import time
from collections.abc import Iterable
from functools import partial

import torch
import torch.nn.functional as F

from .backbones import EMBEDDING, UnitNet, check_input_shape, evaluating
from .domain import as_images, check_memory, group_labels, memory_bytes
from .errors import TransferkitError, UnknownNameError, UntrustedPickle, check, class_ids, is_whole, torch_seed, warn
from .evaluate import predict_logits, text_ids
from .frozen import frozen_activations
from .heads import prototype_logits

FEWSHOT_HEADS = ("linear", "cosine", "prototype")
TRAINED_HEADS = ("linear", "cosine")  # fit by Adam for ``steps`` steps
#: the last episodes drawn, by their labels, groups, sizes and seed: every head and model scored on
#: the same test labels reads one draw (a draw sorts E x N x m keys, m the largest class's size)
_DRAWN: dict = {}


def check_episode_size(episodes: int, per_episode: int, what: str) -> None:
    """Refuse ``episodes`` whose ``per_episode`` float32 values each (the draw's keys, the gathered
    features) exceed this machine's memory together, before allocating them (all episodes are drawn in
    one go, so that a plan's episodes are the same however they are scored)."""
    most = max(1, (memory_bytes() or 0) // max(1, per_episode * 4))
    check_memory(episodes * per_episode * 4, f"{episodes} episodes ({what})",
                 f"use fewer episodes (at most about {most:,} of this size)")


def _positive(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def sample_episodes(labels: torch.Tensor, n_way: int, k_shot: int, n_query: int, episodes: int,
                    generator: torch.Generator, groups: torch.Tensor | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Support indices ``E x N x K``, query indices ``E x N x Q`` and classes ``E x N``; classes
    are drawn among those with at least ``K + Q`` samples, samples without replacement. With
    ``groups`` (one id per sample, e.g. its video), ``K + Q`` groups per class are drawn without
    replacement and one sample of each at random: classes need ``K + Q`` groups. Labels and groups
    may be names (class names, video names)."""
    labels, = text_ids(labels, what="episode labels")
    groups = _as_groups(groups)
    if groups is not None:
        labels = class_ids(labels, "episode labels")
        check(isinstance(groups, torch.Tensor) and groups.shape == labels.shape and not groups.is_floating_point(),
              f"episode groups must be one integer id or name per sample ({len(labels)}), got "
              f"{tuple(groups.shape) if isinstance(groups, torch.Tensor) else type(groups).__name__}")
        inverse, group_label = group_labels(groups.cpu(), labels)
        g_sup, g_qry, classes = _sample(group_label, n_way, k_shot, n_query, episodes, generator, "groups")
        sizes = torch.bincount(inverse)
        order, starts = torch.argsort(inverse, stable=True), torch.cumsum(sizes, 0) - sizes

        def one_of(g):  # a sample of each group g, uniformly
            at = (torch.rand(g.shape, generator=generator, dtype=torch.float64) * sizes[g]).long()
            return order[starts[g] + torch.minimum(at, sizes[g] - 1)]
        return one_of(g_sup), one_of(g_qry), classes
    return _sample(labels, n_way, k_shot, n_query, episodes, generator, "samples")


def _as_groups(groups):
    """Episode ``groups`` given as a list, an array or names (video ids) as a tensor of ids; a tensor
    or None as it is."""
    if groups is None or isinstance(groups, torch.Tensor):
        return groups
    groups, = text_ids(groups, what="episode groups")
    try:
        return torch.as_tensor(groups)
    except (TypeError, ValueError, RuntimeError):
        return groups  # sample_episodes names the type


def _sample(labels, n_way, k_shot, n_query, episodes, generator, what: str):
    """:func:`sample_episodes` without groups; ``what`` the labels are of (samples or groups)."""
    sizes = {"n_way": (n_way, 2), "k_shot": (k_shot, 1), "n_query": (n_query, 1), "episodes": (episodes, 1)}
    bad = [f"{name}={value!r}" for name, (value, least) in sizes.items() if not is_whole(value, least)]
    check(not bad, f"episodes need ints n_way >= 2, k_shot >= 1, n_query >= 1 and episodes >= 1; got "
                   f"{', '.join(bad)}")
    n_way, k_shot, n_query, episodes = int(n_way), int(k_shot), int(n_query), int(episodes)
    labels = class_ids(labels, "episode labels")
    check(len(labels) > 0, "episode labels must be a non-empty set of class ids >= 0")
    counts = torch.bincount(labels)
    eligible = torch.nonzero(counts >= k_shot + n_query).flatten()
    check(len(eligible) >= n_way, f"{n_way}-way {k_shot}-shot with {n_query} queries needs {n_way} classes "
                                  f"with >= {k_shot + n_query} {what}; only {len(eligible)} have them (fewer "
                                  f"queries, n_query, fewer shots, k_shot, or fewer classes, n_way, fit a small "
                                  f"split)")
    check_episode_size(episodes, 3 * max(len(eligible), n_way * int(counts[eligible].max())), "their draw")
    classes = eligible[torch.rand(episodes, len(eligible), generator=generator).argsort(1)[:, :n_way]]
    order = torch.argsort(labels, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    m = int(counts[eligible].max())
    keys = torch.rand(episodes, n_way, m, generator=generator)
    keys = keys.masked_fill(torch.arange(m) >= counts[classes][..., None], 2.0)
    pick = keys.argsort(2)[..., :k_shot + n_query]
    idx = order[starts[classes][..., None] + pick]
    return idx[..., :k_shot], idx[..., k_shot:], classes


def _fit_head(kind: str, support: torch.Tensor, steps: int, lr: float, scale: float) -> torch.Tensor:
    """Per-episode weights (``E x N x D+1`` with the bias last for ``linear``) fit on the
    ``E x N x K x D`` support features by full-batch Adam on the summed episode losses, on their
    device (the cosine head's initial weights drawn on the CPU: the same on every device)."""
    e, n, k, d = support.shape
    x = support.reshape(e, n * k, d)
    if kind == "cosine":  # the support side is fixed: normalised once, not at every step
        x = F.normalize(x, dim=-1)
    y = torch.arange(n, device=x.device).repeat_interleave(k).expand(e, -1)
    w = torch.zeros(e, n, d + 1, device=x.device)
    if kind == "cosine":
        w = (torch.randn(e, n, d + 1, generator=torch.Generator().manual_seed(0)) * 0.01).to(x.device)
    # weights and bias as two contiguous leaves and the logits as W x^T (E x N x NK, the classes
    # on dim 1 of the cross entropy), with x^T made once: every product of the backward then
    # takes contiguous operands (transposing the logits made them 2-5x slower)
    # trained also when called under torch.inference_mode (enable_grad alone does not leave it)
    with torch.inference_mode(False), torch.enable_grad():
        weight, bias = w[..., :-1].clone().requires_grad_(True), w[..., -1].clone().requires_grad_(True)
        xt = x.transpose(1, 2).clone(memory_format=torch.contiguous_format)  # an inference tensor can't be saved
        opt = torch.optim.Adam([weight, bias], lr=lr)
        for _ in range(steps):
            if kind == "linear":
                logits = torch.bmm(weight, xt) + bias[..., None]
            else:
                logits = scale * torch.bmm(F.normalize(weight, dim=-1), xt)
            loss = F.cross_entropy(logits, y, reduction="sum") / (n * k)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return torch.cat([weight.detach(), bias.detach()[..., None]], -1)


def _head_logits(kind: str, w: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
    return _logits(kind, w[..., :-1], w[..., -1], x, scale)


def _logits(kind: str, weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
    """``E x M x N`` logits of ``linear`` (``x W^T + b``) or ``cosine`` (``s cos(x, W)``) heads."""
    if kind == "linear":
        return torch.bmm(x, weight.transpose(1, 2)) + bias[:, None, :]
    return scale * torch.bmm(F.normalize(x, dim=-1), F.normalize(weight, dim=-1).transpose(1, 2))


def episode_accuracies(features: torch.Tensor, labels: torch.Tensor, head: str = "prototype", n_way: int = 5,
                       k_shot: int = 1, n_query: int = 15, episodes: int = 600, seed: int = 0,
                       steps: int = 100, lr: float = 0.01, scale: float = 10.0,
                       groups: torch.Tensor | None = None, device: str | torch.device | None = None) -> torch.Tensor:
    """Accuracy of every episode (``E`` values, on the CPU) of ``head`` on ``N x D`` frozen features.
    The heads are computed on ``device`` (:func:`~transferkit.runtime.resolve_device`; ``None``: the
    CPU, features on another device copied there); the episodes drawn are the same on every device, and
    a GPU's float32 kernels may change an accuracy where a query's logits nearly tie. Labels are class
    ids or names; ``groups`` (e.g. video ids): each episode image from a group of its own
    (:func:`sample_episodes`)."""
    from .runtime import resolve_device

    if head not in FEWSHOT_HEADS:
        raise UnknownNameError("few-shot head", head, FEWSHOT_HEADS)
    if head in TRAINED_HEADS:
        check(is_whole(steps, 1), f"the {head} head is fit by Adam and needs a whole number of steps >= 1, got "
                                f"{steps!r}")
        check(_positive(lr), f"the {head} head needs a learning rate lr > 0, got {lr!r}")
        check(head != "cosine" or _positive(scale), f"the cosine head needs a scale > 0, got {scale!r}")
    check(is_whole(seed), f"episodic evaluation needs a whole-number seed, got {seed!r}")
    seed = torch_seed(seed)  # one that torch.Generator().manual_seed takes
    device = torch.device("cpu") if device is None else resolve_device(str(device))
    labels, = text_ids(labels, what="episode labels")
    labels, groups = class_ids(labels, "episode labels").cpu(), _as_groups(groups)
    check(isinstance(features, torch.Tensor), f"episodic evaluation needs the features as a torch.Tensor, got "
                                              f"{type(features).__name__} (torch.as_tensor converts an array)")
    check(features.dim() == 2 and len(features) == len(labels) and features.shape[1] >= 1,
          f"episodic evaluation needs N x D features and N labels, got {tuple(features.shape)} and {len(labels)}")
    check(bool(torch.isfinite(features).all()), "episodic evaluation: the features contain NaN or infinite values")
    features = features.detach().float().cpu()
    if is_whole(episodes, 1) and is_whole(k_shot, 1) and is_whole(n_query, 1) and is_whole(n_way, 2):
        check_episode_size(int(episodes), int(n_way) * (int(k_shot) + int(n_query)) * features.shape[1],
                           "their features")
    sup_idx, qry_idx = _drawn(labels, n_way, k_shot, n_query, episodes, int(seed), groups)
    if device.type != "cpu":
        features, sup_idx, qry_idx = features.to(device), sup_idx.to(device), qry_idx.to(device)
    support, query = features[sup_idx], features[qry_idx]
    e, n, q, d = query.shape
    flat_q = query.reshape(e, n * q, d)
    if head == "prototype":
        logits = torch.vmap(partial(prototype_logits, metric="sqeuclidean"))(flat_q, support.mean(2))
    else:
        logits = _head_logits(head, _fit_head(head, support, steps, lr, scale), flat_q, scale)
    truth = torch.arange(n, device=device).repeat_interleave(q)
    return (logits.argmax(-1) == truth).cpu().double().mean(1)  # float64: an episode's exact fraction


def _drawn(labels: torch.Tensor, n_way, k_shot, n_query, episodes, seed: int, groups) -> tuple:
    """:func:`sample_episodes` with a generator seeded by ``seed``, drawn once for the same labels,
    groups, sizes and seed (kept for the last few draws; the draw depends on nothing else)."""
    def draw():
        return sample_episodes(labels, n_way, k_shot, n_query, episodes, torch.Generator().manual_seed(seed),
                               groups)[:2]
    if groups is not None and not isinstance(groups, torch.Tensor):
        return draw()  # sample_episodes names what is wrong with them
    key = tuple(hashlib.sha256(t.cpu().contiguous().numpy().data).hexdigest() if t is not None else None
                for t in (labels, groups)) + (str(groups.dtype) if groups is not None else None, n_way, k_shot,
                                              n_query, episodes, seed)
    if key not in _DRAWN:
        if len(_DRAWN) >= 8:
            _DRAWN.pop(next(iter(_DRAWN)))
        _DRAWN[key] = draw()
    return _DRAWN[key]


#: episodes below which :func:`evaluate_episodes` notes that its normal-approximation interval is too narrow
NORMAL_CI_EPISODES = 30


def few_episodes_note(episodes: int) -> str:
    """The note of an interval over 2 to :data:`NORMAL_CI_EPISODES` - 1 episodes (its z of 1.96 is too narrow)."""
    return (f"{episodes} episodes: ci95 is the normal approximation 1.96 · std / √E (Chen et al.'s protocol), too "
            f"narrow for fewer than {NORMAL_CI_EPISODES} episodes (Student's t interval is wider: 6.5 times at 2 "
            f"episodes, 1.4 times at 5); run more episodes")


def mean_ci95(accs: torch.Tensor) -> tuple[float, float]:
    """Mean and 95 % interval half-width ``1.96 * std / sqrt(E)`` with the sample std (``E - 1`` in its
    denominator; Chen et al.'s code divides by ``E``, 0.08 % narrower at 600 episodes); NaN for one episode, where
    the spread is unknown (0 would claim none; :func:`~transferkit.evaluate.format_mean_se`
    likewise prints the mean alone). The z of 1.96 (the field's, for hundreds of episodes) is
    kept for any ``E``: below 30 episodes the interval is too narrow (Student's t with ``E - 1``
    degrees of freedom is 12.7 at 2 episodes, 2.78 at 5), which :func:`evaluate_episodes` notes."""
    # float64 from the start: a list through float32 means print as 0.6225333213806152
    accs = accs.double() if isinstance(accs, torch.Tensor) else torch.as_tensor(accs, dtype=torch.float64)
    n = accs.numel()
    check(accs.dim() == 1 and n > 0 and bool(torch.isfinite(accs).all()),
          f"mean_ci95 needs a 1-D sequence of one or more finite accuracies, got {n} values of shape "
          f"{tuple(accs.shape)}")
    if n < 2:
        return float(accs.mean()), math.nan
    return float(accs.mean()), 1.96 * float(accs.std()) / math.sqrt(n)


def check_heads(heads, who: str) -> list[str]:
    """``heads`` (a head name or a list of them) as a list, each one of :data:`FEWSHOT_HEADS`;
    ``who`` (the function or command) names what needs them in the error."""
    given = heads
    heads = [heads] if isinstance(heads, str) else list(heads) if isinstance(heads, Iterable) else []
    check(len(heads) > 0 and all(isinstance(h, str) for h in heads),
          f"{who} needs heads: a head name or a non-empty list of them ({', '.join(FEWSHOT_HEADS)}); got {given!r}")
    for head in heads:
        if head not in FEWSHOT_HEADS:
            raise UnknownNameError("few-shot head", head, FEWSHOT_HEADS)
    return heads


def evaluate_episodes(features: torch.Tensor, labels: torch.Tensor, heads=FEWSHOT_HEADS, n_way: int = 5,
                      k_shot: int = 1, n_query: int = 15, episodes: int = 600, seed: int = 0, class_names=None,
                      groups: torch.Tensor | None = None, **kw) -> dict:
    """``{head: {"mean": ..., "ci95": ..., "episodes": E, "classes": C}}`` on the same episodes for
    every head (``C``: the classes episodes draw from, those with at least ``k_shot + n_query``
    samples, or with ``groups`` groups; smaller ones are left out with a warning naming them); with
    one episode ``ci95`` is NaN and a ``note`` says why; with 2 to 29 episodes the ``note`` says that
    ``ci95`` (:func:`mean_ci95`, z = 1.96) is too narrow for so few. ``class_names``: the names of the
    label ids, for the warning. The features are cast to float32 (float64 ones too), and the
    ``prototype`` head expands ``||f - p||²`` (:func:`~transferkit.heads.prototype_logits`), which
    loses precision when the features share a large offset (norms in the thousands): centre such
    features (``features - features.mean(0)``, which leaves the exact distances as they are) before
    calling."""
    heads = check_heads(heads, "evaluate_episodes")
    groups = _as_groups(groups)
    counts, what = None, "groups" if groups is not None else "samples"
    if is_whole(k_shot) and is_whole(n_query):
        ids = class_ids(text_ids(labels, what="episode labels")[0], "episode labels").cpu()
        if isinstance(groups, torch.Tensor) and groups.shape == ids.shape and not groups.is_floating_point():
            ids = group_labels(groups.cpu(), ids)[1]  # (other groups: sample_episodes names what is wrong)
        counts = torch.bincount(ids)
    small = [] if counts is None else torch.nonzero((counts > 0) & (counts < k_shot + n_query)).flatten().tolist()
    eligible = None if counts is None else int((counts >= k_shot + n_query).sum())  # the classes episodes draw from
    if small and eligible >= n_way:
        name = (lambda c: str(class_names[c])) if class_names is not None and len(class_names) >= len(counts) \
            else str
        shown = ", ".join(f"{name(c)} ({int(counts[c])})" for c in small[:10]) + (", ..." if len(small) > 10 else "")
        warn(f"evaluate_episodes: an episode draws its classes among those with at least k_shot + n_query = "
             f"{k_shot + n_query} {what}, so class(es) {shown} ({what}) are never drawn: the accuracy is over the "
             f"other {eligible} classes (fewer queries, n_query, take them in)")
    out = {}
    for head in heads:
        accs = episode_accuracies(features, labels, head, n_way, k_shot, n_query, episodes, seed, groups=groups, **kw)
        mean, ci = mean_ci95(accs)
        out[head] = {"mean": mean, "ci95": ci, "episodes": len(accs)}
        if eligible is not None:
            out[head]["classes"] = eligible
        if len(accs) < 2:
            out[head]["note"] = "one episode: no interval (ci95 is NaN); run more episodes to measure the spread"
        elif len(accs) < NORMAL_CI_EPISODES:
            out[head]["note"] = few_episodes_note(len(accs))
    return out


@torch.no_grad()
def extract_features(net, images: torch.Tensor) -> torch.Tensor:
    """``N x D`` embeddings of a (frozen or fine-tuned) :class:`~transferkit.backbones.UnitNet`,
    on the network's device (the images are moved there chunk by chunk). Images already on that
    device go through :mod:`transferkit.frozen`'s memo: a linear probe of the same network
    scored on them later reads these embeddings."""
    check_input_shape(net, images, "extract_features")
    images = as_images(images, "extract_features")  # uint8 scaled; 0-255 floats, NaN refused
    dev = next(net.parameters(), torch.empty(0)).device
    with evaluating(net):  # each submodule gets its own mode back (a frozen unit stays in eval mode)
        if type(net).forward_features is UnitNet.forward_features and images.device == dev:
            return frozen_activations(net, images, EMBEDDING)  # what forward_features runs
        return predict_logits(lambda x: net.forward_features(x.to(dev)), images).to(dev)


#: what episodes on a grouped target (videos) draw
GROUPED_EPISODES = ("each support and query image of an episode is one frame of a video of its own (K + queries videos "
                    "per class), so no query shares a video with a support image")


def episodes_note(rows: list[dict]) -> str:
    """What the rows of :func:`run_episodes` hold (a line under their table): the protocol, the
    classes the episodes drew from where K (or the job) changed them, and that the intervals of
    fewer than :data:`NORMAL_CI_EPISODES` episodes are too narrow."""
    counts = sorted({r["episodes"] for r in rows})
    classes = sorted({r["classes"] for r in rows if isinstance(r.get("classes"), int)})
    by_setting = {r["setting"]: r.get("classes") for r in rows}
    drawn = "" if len(classes) < 2 else (
        "; rows draw their episodes from other numbers of classes (those with at least K + queries test images: "
        + ", ".join(f"{c} at {setting}" for setting, c in by_setting.items()) + ")")
    return (f"Episodes: N-way K-shot on the target test split ({' / '.join(map(str, counts))} episodes per row, the "
            f"same episodes for every model), a head fit on the support images' frozen embedding of each job's "
            f"model, not the test-split accuracy of the run's table; each row's own 95 % interval over its episodes is "
            f"its ci95 in episodes.json; jobs whose embeddings are the same network (a method that trains none of "
            f"it, as matching_net) count once{drawn}"
            + (f"; {few_episodes_note(counts[0])}" if 1 < counts[0] < NORMAL_CI_EPISODES else "")
            + (f"; the target is grouped (videos): {GROUPED_EPISODES}" if any(r.get("grouped_test") for r in rows)
               else "") + ".")


def _check_episodes_fit(test, n_way: int, k_shots, n_query: int) -> None:
    """Refuse, before any scoring, a K for which fewer than ``n_way`` test classes hold K + queries
    images (on a grouped split: groups), naming the split's images per class and the queries that
    would fit."""
    counts, what = test.class_counts(), "images"
    if test.groups is not None:
        counts, what = torch.bincount(group_labels(test.groups, test.labels)[1], minlength=len(counts)), "videos"
    present = list(test.present_classes())
    for k in k_shots:
        eligible = sum(int(counts[i]) >= k + n_query for i in present)
        if is_whole(k, 1) and is_whole(n_query, 1) and is_whole(n_way, 2) and eligible < n_way:
            per_class = sorted((int(counts[i]) for i in present), reverse=True)
            cap = per_class[n_way - 1] if len(per_class) >= n_way else None  # the n_way-th largest class
            fits = cap - max(k_shots) if cap is not None else None  # queries for every K asked
            shown = ", ".join(f"{test.class_names[i]} ({int(counts[i])})" for i in present[:12])
            raise TransferkitError(
                f"episodes: {n_way}-way {k}-shot with {n_query} queries needs {n_way} classes of at least "
                f"{k + n_query} {what} in the target test split {test.name!r}, which holds {shown}"
                f"{', ...' if len(present) > 12 else ''} ({what} per class): "
                + (f"--n-query {fits} fits it{' (every K asked)' if len(set(k_shots)) > 1 else ''}"
                   if fits and fits >= 1 else
                   f"--n-query {cap - k} fits it for {k}-shot, not for {max(k_shots)}-shot (at most {cap - 1} "
                   f"shots with --n-query 1): drop the larger K from --k-shot, or lower --n-query and --k-shot"
                   if cap is not None and cap - k >= 1 else _fewer_episodes(per_class, n_way, k, what)))


def _fewer_episodes(per_class: list[int], n_way: int, k: int, what: str) -> str:
    """The hint of :func:`_check_episodes_fit` where no number of queries fits ``n_way``-way ``k``-shot
    (``per_class``: the classes' sizes, largest first): the most classes and shots that fit with queries, as flags."""
    ways = n_way if len(per_class) >= n_way and per_class[n_way - 1] >= 2 else sum(c >= 2 for c in per_class)
    if ways < 2:
        return f"no episode fits: it needs 2 classes of at least 2 {what} (a support and a query image each)"
    shots = min(k, per_class[ways - 1] - 1)
    return (f"fewer shots or classes fit it with fewer queries, e.g. --n-way {ways} --k-shot {shots} "
            f"--n-query {per_class[ways - 1] - shots}")


def _runs_inside(folder) -> str:
    """The run directories inside ``folder`` (a benchmark's: runs 1 to 3 levels down, each with its
    ``config.yaml`` and ``jobs/``), as the end of a refusal ('' if none)."""
    from .results import runs_inside, runs_listing
    listing = runs_listing(folder, runs_inside(folder, depth=3, with_jobs=True))
    return f"; it {listing}" if listing else ""


def run_episodes(run_dir, methods=None, heads=("prototype",), n_way: int = 5, k_shots=(1, 5), n_query: int = 15,
                 episodes: int = 600, seed: int = 0, log=print, trust_pickles: bool = False,
                 device: str = "cpu") -> tuple[list[dict], dict]:
    """N-way K-shot episodes (seed 004's protocol, after Chen et al. 2019) on the target test split of
    a ``transferkit run`` directory, with the frozen embedding (``net.forward_features``) of each
    finished job's saved model: one row per (job, head, K), ``method`` ``"<method>/<head>"``,
    ``setting`` ``"<N>-way <K>-shot (<the job's setting>)"``, ``accuracy`` the mean over the
    episodes with its ``ci95``. Every model is scored on the same episodes (``seed``), so rows
    compare in pairs; a table of several seeds gives the mean ± standard error over them. On a
    grouped target (videos) each episode image is a frame of a video of its own. Jobs of
    one method and setting whose embeddings are one network (matching_net trains none of it) are
    scored once. ``methods``: the methods to score (default: every method of the run with a saved
    model). Each job's network is read from its network file (``models/<job>.safetensors``), which
    runs no code; a job saved only as a pickle (``models/<job>.pt``: runs before 2026-12-07) is left out,
    and a run of no other job refused, unless ``trust_pickles`` (unpickling runs whatever code the
    file names: only for run directories you trust). ``device`` (:func:`~transferkit.runtime.resolve_device`)
    computes the embeddings and the heads (:func:`episode_accuracies`). Returns the rows and the
    run's results record (its config, and ``unfinished`` when the run is not finished)."""
    from pathlib import Path

    from .config import load_config
    from .experiment import load_job_network
    from .networks import network_digest
    from .results import read_results, unfinished_run
    from .rundata import class_fields, prepare_domains
    from .rundir import changed_since
    from .runtime import resolve_device

    heads = check_heads(heads, "episodes")  # the arguments alone: refused before the run's data is read
    shots = list(k_shots) if isinstance(k_shots, Iterable) and not isinstance(k_shots, str) else []
    sizes = {"n_way": (n_way, 2), "n_query": (n_query, 1), "episodes": (episodes, 1)}
    bad = [f"{name}={value!r}" for name, (value, least) in sizes.items() if not is_whole(value, least)]
    bad += [] if shots and all(is_whole(k, 1) for k in shots) else [f"k_shots={k_shots!r}"]
    check(not bad, f"episodes need ints n_way >= 2, n_query >= 1, episodes >= 1 and a non-empty list of k_shots "
                   f">= 1; got {', '.join(bad)}")
    k_shots = shots  # an iterator of shots is read once, here
    device = resolve_device(device)  # a GPU that is not there: refused before the run is read
    run_dir = Path(run_dir)
    check((run_dir / "config.yaml").is_file(), f"{run_dir} is not a run directory of transferkit run (no config.yaml)"
                                               f"{_runs_inside(run_dir)}")
    data = unfinished_run(run_dir) or read_results(run_dir / "results.json")
    jobs = list(dict.fromkeys((r["method"], r["seed"], r.get("setting")) for r in data["rows"]))
    labels_read = {(r["method"], r["seed"], r.get("setting")): r["n_labeled"] for r in data["rows"]
                   if "n_labeled" in r}  # what ± means under the table: label subsets, or not
    if methods is not None:
        known = {m for m, _, _ in jobs}
        unknown = [m for m in methods if m not in known]
        check(not unknown, f"{run_dir} has no finished job of {unknown}; its methods: {sorted(known)}")
        jobs = [j for j in jobs if j[0] in methods]
    cfg = load_config(run_dir / "config.yaml")
    prepared = prepare_domains(cfg, run_dir=run_dir)
    test = prepared.target.test
    changed = changed_since(run_dir, prepared, ("target.train", "target.val", "target.test"))
    if changed:
        warn(f"episodes: the target's {', '.join(changed)} made now differ from the data the run recorded "
             f"({run_dir / 'data.json'}): the episodes' images may include ones its models trained on (a folder run "
             f"made before 2026-12-02 is split otherwise now; a changed folder or npz file), so these episodes do "
             f"not measure transfer to unseen images")
    _check_episodes_fit(test, n_way, k_shots, n_query)
    if test.groups is not None:
        log(f"episodes: the target {cfg.target!r} is grouped (videos): {GROUPED_EPISODES}")
    rows, scored, refused = [], {}, []
    for method, job_seed, setting in jobs:
        try:
            net = load_job_network(run_dir, method, job_seed, setting if isinstance(cfg.k, list) or isinstance(
                cfg.ratio, list) else None, prepared.channels, trust_pickles)
        except UntrustedPickle as e:
            refused.append(e)
            continue
        except TransferkitError as e:
            warn(f"episodes: {method} seed {job_seed} ({setting}) is left out: {e}")
            continue
        if not isinstance(net, UnitNet):
            warn(f"episodes: {method} is left out: its model has no UnitNet (net) whose embedding episodes read")
            continue
        embedding = network_digest({k: v for k, v in net.state_dict().items() if not k.startswith("head.")})  # read
        if (method, setting, embedding) in scored:
            log(f"  {method:<14} {setting} seed {job_seed}: the embedding of seed {scored[method, setting, embedding]}"
                f" (counted once)")
            continue
        scored[method, setting, embedding] = job_seed
        t0 = time.perf_counter()
        feats = extract_features(net.to(device), test.images)
        extract_s = time.perf_counter() - t0
        for k in k_shots:
            t1 = time.perf_counter()
            scores = evaluate_episodes(feats, test.labels, heads, n_way=n_way, k_shot=k, n_query=n_query,
                                       episodes=episodes, seed=seed, class_names=test.class_names,
                                       groups=test.groups, device=device)
            call_s = time.perf_counter() - t1
            for head, r in scores.items():
                rows.append({"method": f"{method}/{head}", "source": cfg.source_label, "target": cfg.target,
                             "setting": f"{n_way}-way {k}-shot ({setting})", "seed": job_seed, "accuracy": r["mean"],
                             "ci95": r["ci95"], "episodes": r["episodes"], "classes": r.get("classes"),
                             **({"grouped_test": True} if test.groups is not None else {}),
                             "feature_dim": int(feats.shape[1]), "episode_seed": seed, "device": device.type,
                             **class_fields(cfg), "features_wall_s": extract_s,
                             **({"n_labeled": labels_read[method, job_seed, setting]}
                                if (method, job_seed, setting) in labels_read else {}),
                             "wall_s": extract_s + call_s / len(scores)})
        log(f"  {method:<14} {setting} seed {job_seed}: " + ", ".join(
            f"{r['setting'].split(' (')[0]} {r['method'].split('/')[-1]} {100 * r['accuracy']:.1f}%"
            for r in rows if r["seed"] == job_seed and r["method"].startswith(f"{method}/")
            and r["setting"].endswith(f"({setting})")))
    if refused and not rows:
        raise UntrustedPickle(f"episodes: {run_dir} is not read: " + (
            f"{len(refused)} jobs have only pickled models; the first: " if len(refused) > 1 else "") + str(refused[0]))
    if refused:
        warn(f"episodes: {len(refused)} job(s) with only a pickled model are left out (--trust-pickles reads them, "
             f"which runs whatever code they name); the first: {refused[0]}")
    check(rows, f"{run_dir}: no finished job with a saved model to score")
    return rows, data
