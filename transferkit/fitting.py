"""One method for a source network and a target's classes: build it (:func:`build_method`:
its head over the target classes, or the rows of the source head it predicts with), fit it
(:func:`fit_for_target`) and score it (:func:`evaluate_on`). A run's jobs
(:func:`~transferkit.experiment.run_job`) and ``Transfer.fit`` both go through here."""

from __future__ import annotations

import copy

import torch

from .domain import Domain, head_mapping, numbers_classes
from .errors import TransferkitError, check, first_named, warn
from .evaluate import classification_report, fraction_correct, harmonic_mean, predict_logits
from .heads import head_for_classes, retargeted_head
from .methods.base import Method
from .methods.supervised import SourceOnly
from .splits import dataset_name


def retarget_head(net, source_classes: list[str] | None, target_classes: list[str]) -> list[str]:
    """Give ``net`` a head over the target classes, copying the rows of classes shared
    with the source (a new classifier row for each new class, as in seed 000 §4.1 fine-tuning).
    Only the head's final layer is replaced (:func:`~transferkit.heads.retargeted_head`): the
    hidden layers of an MLP head (an ``nn.Sequential`` ending in a linear layer) keep their
    weights. A head without such a final layer (a module of one's own) is replaced by a new
    linear head, with a warning: none of its layers or rows are kept.
    ``source_classes=None`` (the head's classes are unknown, e.g. a network handed in
    without its source domain): new rows for every class, only when the class counts differ.
    Returns the target classes whose rows are new (untrained)."""
    n = len(target_classes)
    if source_classes is None:
        if net.num_classes == n:
            return []
        rows: list[int | None] = [None] * n
    elif list(source_classes) == list(target_classes):
        return []
    else:
        rows = head_mapping(source_classes, target_classes)
    old = net.get_classifier()
    new = None if net.num_classes == 0 else retargeted_head(old, rows)  # reset_classifier(0): no classifier
    if new is not None:
        new.train(net.training)
        net.head = new
        return [c for c, r in zip(target_classes, rows) if r is None]
    if net.num_classes != 0:
        kept = [c for c, r in zip(target_classes, rows) if r is not None]
        warn(f"the network's head ({type(old).__name__}) has no final linear layer whose class rows can be "
             f"retargeted (a linear or cosine head, or an nn.Sequential whose last layer with parameters is one), "
             f"so it is replaced by a new linear head on the {net.embed_dim}-d embedding for the {n} target "
             f"classes: none of its layers" + (f", nor the rows of the classes it shares with the target "
                                              f"([{first_named(map(repr, kept))}]), are kept"
                                              if kept else " are kept") +
             ". To keep them, give the head as an nn.Sequential ending in its nn.Linear classifier")
    net._new_classifier(n)  # reset_classifier without its own warning about the layers dropped
    return list(target_classes)


def evaluate_on(forward, domain: Domain) -> dict:
    if isinstance(forward, Method):
        logits = forward.logits(domain.images)
    else:
        if isinstance(forward, torch.nn.Module):
            forward.eval()
        logits = predict_logits(forward, domain.images)
    return classification_report(logits, domain.labels, domain.num_classes, domain.groups)


def source_only_of(net, head_classes: list[str] | None, target_classes: list[str], before_narrowing=None,
                   network_only: bool = False) -> SourceOnly:
    """:func:`~transferkit.source.source_only_model` of ``net`` itself, whose head's rows are ``head_classes``
    (``None``: taken by position), for ``target_classes``; ``network_only``: no source domain
    (``source: null``, ``Transfer.fit(net=)`` without ``source=``), which a refusal's hint names."""
    model = SourceOnly(net)
    rows = source_head_rows(SourceOnly, head_classes, net.num_classes, target_classes, network_only)
    if rows is not None:
        if before_narrowing is not None:
            before_narrowing(model, rows)
        model.net.head = head_for_classes(model.net.head, rows, model.net.num_classes)
    return model.eval()


def all_source_classes_fields(method, rows: list[int], domain: Domain) -> dict:
    """Partial domain adaptation (the target's classes a strict subset of the source's): the
    accuracy on ``domain`` (labelled with the target classes, whose source-head rows are ``rows``)
    of the argmax over *every* source class, as the partial-DA protocol scores it, from ``method``
    whose head still has them all: ``accuracy_all_source_classes`` and ``n_source_classes`` of a
    row; ``{}`` when the target has every source class (the argmax is then the same)."""
    n = method.net.num_classes
    if len(set(rows)) >= n:
        return {}
    pred = method.logits(domain.images).argmax(1)
    truth = torch.tensor(rows, dtype=torch.long)[domain.labels]
    return {"accuracy_all_source_classes": fraction_correct(pred.cpu(), truth), "n_source_classes": n}


def source_head_rows(cls, head_classes: list[str] | None, num_outputs: int,
                     target_classes: list[str] | None, network_only: bool = False) -> list[int] | None:
    """For a method that predicts with its head trained on the source classes
    (``Method.predicts_with_source_head``: source_only and the domain adaptation family), the
    rows of that head that predict the target classes, matched by name; ``None`` when its
    outputs already are the target classes. Refuses a target class the source does not
    have: such a method cannot predict it (``network_only``: a run without source images,
    ``source: null``, whose hint names what it can run)."""
    if not cls.predicts_with_source_head() or target_classes is None:
        return None
    if head_classes is None:  # a network handed in without its source domain
        check(num_outputs == len(target_classes),
              f"it predicts with the network's own classifier ({num_outputs} outputs), which cannot be matched "
              f"to the {len(target_classes)} target classes: "
              + ("set net.class_names = [the class of each row] to match them by name" if network_only else
                 "give the source domain as well, or set net.class_names = [the class of each row]"))
        return None
    check(len(head_classes) == num_outputs, f"the network has {num_outputs} outputs for {len(head_classes)} "
                                            f"source classes")
    if list(head_classes) == list(target_classes):
        return None
    rows = head_mapping(list(head_classes), list(target_classes))
    missing = [c for c, r in zip(target_classes, rows) if r is None]
    check(not missing or not network_only,
          f"it predicts with the network's classifier, whose classes ({list(head_classes)[:10]}) lack the target "
          f"classes {missing[:10]}: train on a few target labels (finetune, linear_probe, ...), or, if they are "
          f"the same classes, name the target's classes as the network's (class names are matched, not positions)")
    check(not missing or not (numbers_classes(target_classes) and not numbers_classes(head_classes)),
          f"the target's classes are numbers ({list(target_classes)[:10]}: an npz file without class_names numbers "
          f"its classes) and the source's are names ({list(head_classes)[:10]}); classes are matched by name, so "
          f"{'none' if len(missing) == len(target_classes) else 'some'} of the target's match: save the npz with "
          f"class_names, the source's name of each label (np.savez(path, x=x, y=y, class_names=[...]))")
    check(not missing, f"it never sees target labels and predicts with the source classifier, so it cannot "
                       f"predict target classes absent from the source: {missing}. For target classes the source "
                       f"lacks, train on a few target labels: finetune_adv or lext (seed 000's setting: k labelled "
                       f"target images per class and the unlabelled rest; set k in a run, give target= in "
                       f"Transfer.fit), or finetune")
    return rows


def check_selection_classes(cls, val: Domain | None, head_classes: list[str] | None,
                            target_classes: list[str] | None, hint: str = "") -> None:
    """Refuse a validation split whose classes are not those the method's outputs are scored
    on while it trains: the target's (a head trained on target labels, or a source head's
    rows of the target classes), or, for a method that predicts with its source head, also
    all the source's. Early stopping would compare labels of one class list with outputs of
    another. Zero-shot methods check validation classes themselves (description rows by name,
    ``clip`` against the classes it scores)."""
    if val is None or ("target" not in cls.streams and not cls.predicts_with_source_head()):
        return
    allowed = [list(c) for c in ([target_classes] + ([head_classes] if cls.predicts_with_source_head() else []))
               if c is not None]
    check(not allowed or list(val.class_names) in allowed,
          f"the validation domain {val.name!r} has classes {list(val.class_names)}, but {cls.name} is scored on "
          f"{' or '.join(map(str, allowed))} while it trains{hint}")


def zero_shot_options(cls, options: dict, source_classes: list[str] | None,
                      target_classes: list[str] | None) -> dict:
    """Options of a method that scores class descriptions (``source_head = False``) for a
    transfer from ``source_classes`` to ``target_classes``. A CLIP-style method scores the
    target classes, in their order: a ``class_names`` option that names others is refused
    (its logit columns would be read as the target's label ids). An attribute /
    class-embedding method scores the rows of its description matrix; :func:`fit_for_target`
    matches classes to rows by name when the rows are named (built-in digit sets, or its
    ``class_names`` option; with ``class_embeddings: text`` by default the source's and the
    target's classes), and a class without a row is refused here, before any job trains;
    unnamed rows are class ids, so one list of class names must then begin the other (ids
    mean the same classes in both), else it is refused."""
    if cls.source_head is not False:
        return options
    if source_classes is not None and hasattr(cls, "options_for_source"):  # clip: captions by source class
        options = cls.options_for_source(options, source_classes)
    if getattr(cls, "reads_class_text", lambda o: False)(options) and options.get("class_names") is None:
        classes = [*(source_classes or []), *(target_classes or [])]  # embeds the classes' names
        options = {**options, "class_names": list(dict.fromkeys(str(c) for c in classes))}
    if target_classes is None:  # Transfer.fit without a target: clip scores class_names or its source's classes
        return options
    if getattr(cls, "scores_class_names", False):
        given = options.get("class_names")
        if isinstance(given, str) or (given is not None and not hasattr(given, "__iter__")):
            return options  # not a sequence of names: the method itself says so
        given = None if given is None else [str(c) for c in given]  # a list, tuple or array
        check(given is None or given == list(target_classes),
              f"its option class_names {given} is not the target's classes {list(target_classes)}: with a "
              f"target, {cls.name} scores the target's classes in their order (its outputs are read as the target's "
              f"label ids); leave class_names out and choose the classes by the target (target_classes in a config, "
              f"target.select_classes(...) in Python)")
        return {**options, "class_names": list(target_classes)}
    if cls.named_rows(options):
        cls.check_described(options, [*(source_classes or []), *target_classes])
        return options
    shorter = min(len(source_classes or []), len(target_classes))
    check(source_classes is None or list(source_classes)[:shorter] == list(target_classes)[:shorter],
          f"its class descriptions are rows without class names, read by class id, and the source classes "
          f"{list(source_classes or [])} and target classes {list(target_classes)} are numbered apart: give "
          f"the option class_names (the class of each row) to match them by name")
    return options


def build_method(cls, net, options: dict, head_classes: list[str] | None, target_classes: list[str] | None):
    """``cls`` on ``net`` with its options; a method that trains on target labels gets a head
    over the target classes (:func:`retarget_head` from ``head_classes``, the classes of
    ``net``'s head), after the method is built when it keeps a copy of the source network.
    A method that predicts with its source head is checked to predict every target class
    (:func:`source_head_rows`); :func:`fit_for_target` narrows its head after training.
    ``run_job`` and ``Transfer.fit`` both build methods here and train them with
    :func:`fit_for_target`."""
    try:
        source_head_rows(cls, head_classes, net.num_classes, target_classes)
    except TransferkitError:
        cls(copy.deepcopy(net), **options)  # the method's own error (e.g. distill without teachers) comes first
        raise
    net_outputs = net.num_classes
    headless = net_outputs == 0  # reset_classifier(0): a fresh head would be untrained where it is kept fixed
    method = cls(net, **options) if cls.built_before_retarget else None
    new: list[str] = []  # target classes whose head rows are new (untrained)
    if "target" in cls.streams and target_classes is not None:
        new = retarget_head(net, head_classes, target_classes)
    method = cls(net, **options) if method is None else method
    if new:
        method.head_has_new_rows(new)
    check(not (headless and method.keeps_head_fixed),
          f"{method.name} trains {', '.join(method.trainable_units())} and keeps the network's classifier fixed, but "
          f"the network has none (as after reset_classifier(0)): give it a classifier trained on these classes, or "
          f"use a method that trains the head (ft_unit:head, ft_fc1, ft_all, flex)")
    if new and method.keeps_head_fixed:
        unnamed = [c for c in new if head_classes is not None and c in head_classes]
        why = (f"the network's head has {net_outputs} outputs for the {len(target_classes)} target classes and, "
               f"without the source domain, its classes are unknown, so every target class has a new row"
               if head_classes is None else
               f"the rows of the classes {unnamed[:10]} could not be kept from the source head (see the warning "
               f"above), so their rows are new" if unnamed else
               f"the target classes {new[:10]} are not among the source head's: their rows are new")
        raise TransferkitError(
            f"{method.name} trains {', '.join(method.trainable_units())} and keeps the head fixed, but {why} and "
            f"would never be trained. Use a method that trains the head (ft_unit:head, ft_fc1, ft_all, flex) or "
            f"target classes the source has")
    return method


def fit_for_target(method, make_engine, head_classes: list[str] | None, target_classes: list[str] | None,
                   before_narrowing=None, **domains):
    """``method.fit_transfer(make_engine, **domains)`` (``source``, ``target``, ``unlabeled``,
    ``val``). A method that predicts with its source head (:func:`source_head_rows`) then keeps
    only the head's rows of the target classes, so that its outputs are the target classes
    (``before_narrowing(method, rows)``, if given, is called just before, e.g. to score the argmax
    over every source class, :func:`all_source_classes_fields`);
    while it trains, early stopping scores a target-class ``val`` on those rows already
    (``Method.eval_rows``). A zero-shot method then predicts among the classes present in
    ``target`` (its candidates; training used the source's)."""
    domains = _without_unseen_validation(method, domains)
    if reads_no_target_label(type(method)):
        domains = {**domains, "val": unsupervised_validation(method.name, domains.get("source"),
                                                             domains.get("unlabeled"), domains.get("val"))}
    if getattr(method, "row_names", None) is not None:  # zero-shot: classes matched to description rows
        return _fit_described(method, make_engine, **domains)
    rows = source_head_rows(type(method), head_classes, method.net.num_classes, target_classes)
    val = domains.get("val")
    method.eval_rows = rows if val is not None and list(val.class_names) == list(target_classes or []) else None
    try:
        fit = method.fit_transfer(make_engine, **domains)
    finally:
        method.eval_rows = None
    if rows is not None:
        if before_narrowing is not None:
            before_narrowing(method, rows)
        method.net.head = head_for_classes(method.net.head, rows, method.net.num_classes)
    if hasattr(method, "set_candidates") and domains.get("target") is not None:  # zero-shot: trained on the
        method.set_candidates(domains["target"].present_classes())  # seen classes, predicts the target's
    return fit


def _without_unseen_validation(method, domains: dict) -> dict:
    """``domains`` without ``val`` when ``method`` scores class descriptions (zero-shot:
    attributes, class-name embeddings, clip) and ``val`` holds classes the source lacks: their
    labels are of unseen classes, which a zero-shot method must not select on. A source of
    caption ids (:class:`~transferkit.clip.CaptionedDomain`) names its images' classes in
    ``provenance["classes"]``; one without that record is kept.)"""
    source, val = domains.get("source"), domains.get("val")
    if type(method).source_head is not False or source is None or val is None:
        return domains
    present = lambda d: {d.class_names[i] for i in d.present_classes()}  # noqa: E731
    if "captions" in source.provenance:
        if "classes" not in source.provenance:
            return domains
        seen = set(source.provenance["classes"])
    else:
        seen = present(source)
    if present(val) <= seen:
        return domains
    warn(f"{method.name}: the validation split holds classes the source lacks (unseen ones); it is "
         f"not used, training runs its whole budget (select_on: source_val selects on seen classes)")
    return {**domains, "val": None}


def _fit_described(method, make_engine, **domains):
    """:func:`fit_for_target` of a zero-shot method whose description rows are named: every
    domain is renumbered to rows by class name; it trains on the source's rows and predicts
    among the target's, with its outputs in the target's class order (without a target: the
    source's, whose classes the fitted model then names)."""
    rows = {k: method.to_rows(d) for k, d in domains.items() if d is not None}
    side = "target" if rows.get("target") is not None else "source"
    fit = method.fit_transfer(make_engine, **rows)
    if rows.get(side) is not None:
        method.set_candidates(rows[side].present_classes())
        method.output_rows = [method.row_names.index(c) for c in domains[side].class_names]
    return fit


def seen_unseen_accuracy(per_class: list, class_names: list[str], seen: list[str], partial: bool = False) -> dict:
    """Generalised zero-shot's (and few-shot's) accuracies on a target of seen and new
    classes, every target class a candidate: the mean per-class accuracy over the target
    classes that ``seen`` names (``seen_accuracy``) and over the others (``unseen_accuracy``),
    and their harmonic mean ``h_accuracy`` (Xian et al. 2017's GZSL measure; not in the seeds);
    classes without test images are left out (with a warning when both kinds are scored).
    ``{}`` unless the target has test images of both kinds;
    with ``partial`` (``Transfer.report``), the accuracy of the one kind it has (no ``h_accuracy``)."""
    kinds, seen = {True: [], False: []}, set(seen)
    for name, acc in zip(class_names, per_class):
        if acc is not None:
            kinds[name in seen].append(acc)
    if not (kinds[True] and kinds[False]):
        return {f"{'seen' if kind else 'unseen'}_accuracy": sum(v) / len(v)
                for kind, v in kinds.items() if partial and v}
    absent = [name for name, acc in zip(class_names, per_class) if acc is None]
    if absent:
        warn(f"the target classes {absent[:10]} have no test image: they are left out of the seen / unseen accuracy")
    s, u = (sum(v) / len(v) for v in (kinds[True], kinds[False]))
    return {"seen_accuracy": s, "unseen_accuracy": u, "h_accuracy": harmonic_mean(s, u)}


def report_seen_unseen(report: dict, class_names: list[str], seen, partial: bool = False) -> dict:
    """:func:`seen_unseen_accuracy` of a :func:`~transferkit.evaluate.classification_report`, from
    its confusion matrix (its ``per_class_accuracy`` is rounded to 6 decimals)."""
    exact = [c[i] / sum(c) if sum(c) else None for i, c in enumerate(report["confusion"])]
    return seen_unseen_accuracy(exact, class_names, seen, partial)


def method_error(cls, options: dict, error: Exception) -> TransferkitError:
    """``error`` (from building or checking method ``cls`` with ``options``) named with both."""
    why = str(error) if isinstance(error, (TransferkitError, TypeError, ValueError)) \
        else f"{type(error).__name__}: {error}"
    why = why.removeprefix(f"{cls.name}: ")  # the method's own checks name it too
    return TransferkitError(f"method {cls.name}{f' with options {_short(options)}' if options else ''}: {why}")


def _short(value, limit: int = 80):
    """``value`` for a message: a dict's values each shortened; a list, array or tensor whose
    text is longer than ``limit`` characters as its kind and shape (``<list of 10 × 9>``)."""
    if isinstance(value, dict):
        return {k: _short(v, limit) for k, v in value.items()}
    if isinstance(value, torch.nn.Module):  # a network prints its whole structure
        name = getattr(value, "name", None)
        return _Bare(f"<{type(value).__name__}{f' {name!r}' if isinstance(name, str) else ''}>")
    if not (isinstance(value, (list, tuple)) or hasattr(value, "shape")) or len(repr(value)) <= limit:
        return value
    shape, inner = list(getattr(value, "shape", ())), value
    while not hasattr(value, "shape") and isinstance(inner, (list, tuple)):
        shape.append(len(inner))
        rows = {len(v) if isinstance(v, (list, tuple)) else -1 for v in inner}
        inner = inner[0] if len(rows) == 1 and -1 not in rows else None
    return _Bare(f"<{type(value).__name__} of {' × '.join(map(str, shape))}>")


class _Bare(str):
    """A string that a dict's repr shows without quotes."""

    def __repr__(self):
        return str(self)



def reads_no_target_label(cls) -> bool:
    """Unsupervised adaptation and source_only: no target stream, the source head predicts."""
    return "target" not in cls.streams and cls.predicts_with_source_head()


def unsupervised_validation(name: str, source: Domain | None, unlabeled: Domain | None,
                            val: Domain | None) -> Domain | None:
    """The ``val`` that a method which reads no target label (:func:`reads_no_target_label`)
    may select on: none, with a warning, for one cut from the unlabelled target's domain and not
    from the source's; one recognisably cut from neither is kept, with a warning that it may
    hold target labels. Which domain a split part was cut from: the ``spec`` it was loaded from
    (:func:`~transferkit.data.load_domain` records it in ``provenance``; every split keeps
    it), else the folder or file it was read from (``origin``: two image folders both named
    ``images`` differ), else its name (:func:`~transferkit.splits.dataset_name`: ``mnist/val``
    and ``mnist/train/unlabeled``)."""
    def base(d):
        if d is None:
            return None
        origin = d.provenance.get("origin", "")
        return (d.provenance.get("spec") or (origin if origin.startswith(("folder:", "npz:")) else None)
                or dataset_name(d.name))
    if val is not None and base(val) == base(unlabeled) != base(source):
        warn(f"{name}: ignoring the labelled target validation split for model selection "
             "(it reads no target label); set select_on: none or source_val in a run, or leave out "
             "val= in Transfer.fit")
        return None
    if val is not None and source is not None and base(val) != base(source):
        warn(f"{name}: early stopping selects on the labels of val {val.name!r}, which is not "
             f"recognisably a split of the source {source.name!r}: if it holds target labels, this "
             f"method, which reads no target label, reads them after all (leave out val=, or give a split "
             f"of the source, e.g. transferkit.splits.split_domain(source).val)")
    return val
