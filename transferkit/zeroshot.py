"""Zero-shot learning from class descriptions (seed 001 "Zero-shot Learning").

Training sees images of the *seen* classes only; each class ``c`` (seen or not) is described
by a vector: an attribute vector ``a_c`` ("representing each class by its attributes") or a
class-name embedding. At test time the unseen classes are recognised through their
descriptions alone.

* :class:`AttributeZeroShot` (``attribute_zsl``) -- an image -> attribute predictor
  ``p(x) = sigmoid(h(x))`` trained with binary cross entropy
  ``L = -mean_k [a_yk log p_k + (1 - a_yk) log(1 - p_k)]`` (also averaged over the batch) on
  the seen classes, then "find the class with the most similar attributes": ``score_c(x) =
  sum_k a_ck log p_k + (1 - a_ck) log(1 - p_k)`` (``dap``, the attribute likelihood) or
  ``-||p(x) - a_c||^2`` (``euclidean``).
* :class:`EmbeddingZeroShot` (``embedding_zsl``) -- image embedding ``f(x)`` and class
  embedding ``g(y)`` (a trainable map of the class description: attributes, or a frozen
  text encoding of the class name) "as close as possible": ``logits_c = s cos(f(x), g(c))``,
  cross entropy over the seen classes.

Both score all classes; ``set_candidates`` restricts predictions (seen classes while
training, unseen for zero-shot, all for generalised zero-shot). :func:`zero_shot_report`
gives the zero-shot accuracy and the generalised zero-shot seen / unseen accuracies and
their harmonic mean ``H = 2 s u / (s + u)``. Through ``transferkit run`` / ``Transfer``,
domains are matched to description rows by class name (built-in digit sets: rows ``"0"``-
``"9"``; a matrix of your own: option ``class_names``), and the outputs are the target's
classes in its order.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbones import evaluating
from .domain import Domain, is_complex
from .errors import TransferkitError, UnknownNameError, check, warn
from .errors import class_ids as errors_class_ids
from .evaluate import fraction_correct, harmonic_mean, predict_logits
from .io import MATRIX_FILES, relative_hint
from .methods.base import Method, register, within_memory
from .text import DEFAULT_TEXT_MODEL, class_text_embeddings

#: attributes of the built-in digit descriptions (see :data:`DIGIT_ATTRIBUTES`)
DIGIT_ATTRIBUTE_NAMES = (
    "loop_upper",     # a closed loop in the upper half
    "loop_lower",     # a closed loop in the lower half
    "vertical",       # a straight vertical stroke
    "horizontal",     # a straight horizontal stroke
    "diagonal",       # a straight diagonal stroke
    "curve_top",      # a curved stroke along the top
    "curve_bottom",   # a curved stroke along the bottom
    "mid_junction",   # strokes meet, cross or make a cusp at mid height
)

#: ``10 x 8`` attribute matrix read from the glyphs (printed fonts and hand-writing); 0.5 marks
#: an attribute present in some styles only.
#: 0: one tall loop: loop_upper, loop_lower, curve_top, curve_bottom.
#: 1: vertical stem; the flag is a short diagonal in most fonts and often by hand (0.5).
#: 2: curve_top, diagonal body, horizontal base.
#: 3: curve_top, curve_bottom, cusp at mid height (mid_junction).
#: 4: vertical stem, horizontal bar, diagonal; closed upper triangle in print, open by hand
#:    (loop_upper 0.5); bar meets stem (mid_junction).
#: 5: horizontal top bar, short vertical (0.5), bowl at the bottom (curve_bottom).
#: 6: curve_top and a loop in the lower half (loop_lower, curve_bottom).
#: 7: horizontal top bar and a diagonal stem.
#: 8: loop_upper, loop_lower, curve_top, curve_bottom, crossing at mid height (mid_junction).
#: 9: loop_upper, curve_top, a vertical stem; the tail curves in some fonts (curve_bottom 0.5).
DIGIT_ATTRIBUTES = torch.tensor([
    # lu   ll   ver  hor  diag ctop cbot mid
    [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0],  # 0
    [0.0, 0.0, 1.0, 0.0, 0.5, 0.0, 0.0, 0.0],  # 1
    [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0],  # 2
    [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0],  # 3
    [0.5, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0],  # 4
    [0.0, 0.0, 0.5, 1.0, 0.0, 0.0, 1.0, 0.0],  # 5
    [0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0],  # 6
    [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0],  # 7
    [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0],  # 8
    [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.5, 0.0],  # 9
])

MASKED = -1e9


def glyph_zone_attributes(grid: int = 3, threshold: float = 0.2) -> torch.Tensor:
    """``10 x grid^2`` attributes computed from the printed glyphs of the 21 syndigits font faces
    (:func:`~transferkit.data.glyph_masks`): the fraction of fonts whose glyph has ink (mean
    coverage ``> threshold``) in each cell of a ``grid x grid`` division of the 44 x 44 px glyph
    box ("ink at top-left", ..., "ink at the centre"), row-major from the top-left cell."""
    from .data import glyph_masks

    cells = F.adaptive_avg_pool2d(glyph_masks()[..., 10:54, 10:54], grid).flatten(2)
    return (cells > threshold).float().mean(0)


DIGIT_SETS = {"strokes": lambda: DIGIT_ATTRIBUTES.clone(), "zones": lambda: glyph_zone_attributes()}


def is_digit_set(name) -> bool:
    """Whether ``name`` names a built-in digit attribute set (``strokes``, ``zones``, ``strokes+zones``)."""
    return isinstance(name, str) and all(n in DIGIT_SETS for n in name.split("+"))


def digit_attributes(kind: str = "strokes") -> torch.Tensor:
    """Built-in digit attribute matrices: ``strokes`` (:data:`DIGIT_ATTRIBUTES`, 8 attributes),
    ``zones`` (:func:`glyph_zone_attributes`, 9) or ``strokes+zones`` (17)."""
    if not is_digit_set(kind):
        raise UnknownNameError("digit attribute set (or a .npy / .csv / .txt matrix file)", kind,
                               [*DIGIT_SETS, "+".join(DIGIT_SETS)])
    return torch.cat([DIGIT_SETS[n]() for n in kind.split("+")], 1)


#: what a ``.csv`` / ``.txt`` description matrix file holds, for its error messages
MATRIX_LAYOUT = ("numbers only, one row per class in the order of class_names (or of the class ids), with no header "
                 "row and no class-name column")


def matrix_file(path, what: str) -> np.ndarray:
    """A ``C x D`` matrix (one row per class) from a ``.npy``, ``.csv`` (commas) or ``.txt``
    (spaces) file; a relative path is read from the current directory, as ``npz:`` domains.
    A text file holds numbers only (:data:`MATRIX_LAYOUT`; ``#`` starts a comment, blank lines
    are skipped, a UTF-8 byte-order mark as Excel's "CSV UTF-8" writes is read past)."""
    p = Path(path).expanduser()
    where = f"the {what} file {str(p)!r}"
    check(p.is_file(), f"{where} does not exist{relative_hint(p)}")
    if p.suffix.lower() != ".npy":
        m = _text_matrix(p, where)
    else:
        try:
            m = np.load(p, allow_pickle=False)
        except Exception as e:  # not a .npy, or an array of objects
            raise TransferkitError(f"{where} cannot be read as a matrix of numbers: {e}") from None
    check(m.ndim == 2, f"{where} holds an array of shape {tuple(m.shape)}: it must be classes x features, one "
                       f"row per class (in the order of class_names, or of the classes)")
    return m


def _text_matrix(p: Path, where: str) -> np.ndarray:
    """The numbers of a ``.csv`` (commas) or ``.txt`` (spaces) matrix file, one row per line,
    or an error naming the row that is not numbers or has another count of them."""
    sep = "," if p.suffix.lower() == ".csv" else None
    try:
        text = p.read_text(encoding="utf-8-sig")  # Excel's "CSV UTF-8" begins with a byte-order mark
    except UnicodeDecodeError as e:
        raise TransferkitError(f"{where} is not UTF-8 text ({e}): save it as UTF-8, {MATRIX_LAYOUT}") from None
    rows = []  # (line number, fields) of each line that is not blank or a comment
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            rows.append((number, [f.strip() for f in line.split(sep)]))
    check(len(rows) > 0, f"{where} holds no numbers (it is empty or all comments): give {MATRIX_LAYOUT}")
    at = lambda r, n: f"row {r}" + (f" (line {n})" if n != r else "")  # noqa: E731
    for r, (number, fields) in enumerate(rows, 1):
        bad = [c for c, field in enumerate(fields, 1) if not _is_number(field)]
        if bad:
            c, field = bad[0], fields[bad[0] - 1]
            raise TransferkitError(f"{where}: {at(r, number)}, column {c} holds {field!r:.80}, not a number"
                                   f"{_field_hint(field, sep, p.suffix.lower(), bad == [1], r == 1)}: the file must "
                                   f"hold {MATRIX_LAYOUT}")
    width = Counter(len(fields) for _, fields in rows).most_common(1)[0][0]
    for r, (number, fields) in enumerate(rows, 1):
        check(len(fields) == width, f"{where}: {at(r, number)} has {len(fields)} values where the other rows have "
                                    f"{width}: every row needs one value per feature")
    return np.array([[float(f) for f in fields] for _, fields in rows], dtype=np.float64)


def _field_hint(field: str, sep: str | None, suffix: str, first_column: bool, first_row: bool) -> str:
    """Why a field of a matrix file is no number, where it can be told."""
    if not field:
        return " (an empty value: a separator too many?)"
    other = field.split(None if sep else ",")
    if len(other) > 1 and all(map(_is_number, other)):  # numbers between the other separator
        return (f" (values separated by {'spaces' if sep else 'commas'}: a {suffix or 'text'} file separates them by "
                f"{'commas' if sep else 'spaces'}; name it {'.txt' if sep else '.csv'})")
    if sep and ";" in field:
        return " (a .csv separates values by commas)"
    return " (a class-name column?)" if first_column else " (a header row?)" if first_row else ""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def description_matrix(values, what: str) -> torch.Tensor:
    """``values`` as a float ``C x D`` matrix of finite real numbers, or a named error."""
    check(not is_complex(values), f"the {what} must be real numbers, got complex ones")
    try:
        m = torch.as_tensor(values, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TransferkitError(f"the {what} must be a classes x features matrix of numbers (one row per class; "
                               f"for class names, embed them: class_text_embeddings(names)); {e}") from None
    check(m.dim() == 2 and m.shape[0] >= 2 and m.shape[1] >= 1,
          f"the {what} must be classes x features with at least 2 classes, got shape {tuple(m.shape)}")
    check(bool(torch.isfinite(m).all()), f"the {what} has NaN or infinite values")
    _, inverse, counts = torch.unique(m, dim=0, return_inverse=True, return_counts=True)
    if bool((counts > 1).any()):
        rows = torch.nonzero(inverse == int(torch.nonzero(counts > 1)[0])).flatten().tolist()
        raise TransferkitError(f"the {what} gives rows {rows[:10]} the same values: a class must be told apart by its "
                               f"description (seed 001: one-to-one attributes), or it can never be predicted")
    return m


def attribute_matrix(attributes=None, num_classes: int | None = None) -> torch.Tensor:
    """A ``C x A`` float matrix with entries in [0, 1]: the given one, a ``.npy`` / ``.csv`` /
    ``.txt`` file of it (:func:`matrix_file`), or a built-in digit set by name
    (:func:`digit_attributes`; ``None``: ``strokes``)."""
    what = "attribute matrix"
    if isinstance(attributes, str) and Path(attributes).suffix.lower() in MATRIX_FILES:
        what, attributes = f"attribute matrix {attributes!r}", matrix_file(attributes, "attribute matrix")
    elif attributes is None or isinstance(attributes, str):
        attributes = digit_attributes(attributes or "strokes")
    a = description_matrix(attributes, what)  # classes x attributes, finite
    check(bool(((a >= 0) & (a <= 1)).all()), f"{what}: attribute values must lie in [0, 1]")
    check(num_classes is None or a.shape[0] == num_classes,
          f"the attribute matrix has {a.shape[0]} rows for {num_classes} classes")
    return a.clone()


def rows_by_class(description, class_names, option: str):
    """A ``{class: row}`` description as its rows and their classes (the keys, in order, as
    ``class_names``); any other description and ``class_names`` as given."""
    if not isinstance(description, dict):
        return description, class_names
    check(class_names is None, f"{option} is a dict {{class: row}}, which names the class of each row: leave "
                               f"class_names out (or give a matrix and class_names)")
    return list(description.values()), [str(c) for c in description]


def described_by(option: str, description) -> str:
    """How a message names a description option's rows: its file, else ``the OPTION matrix``."""
    if isinstance(description, str) and Path(description).suffix.lower() in MATRIX_FILES:
        return f"the {option} file {description!r}"
    return f"the {option} matrix"


def listed_names(names) -> bool:
    """Whether ``names`` lists names as ``class_names`` takes them: a list, tuple or array (not a text)."""
    return names is not None and not isinstance(names, str) and hasattr(names, "__len__")


def repeated(names) -> list[str]:
    """The names listed more than once, sorted (in Domain's Unicode form, NFC)."""
    return sorted(c for c, n in Counter(unicodedata.normalize("NFC", str(c)) for c in names).items() if n > 1)


class _ClassDescriptionMethod(Method):
    """Shared machinery: scores over every described class, masked to the candidate classes."""

    streams = ("source",)
    source_head = False  # scores class descriptions, seen or not
    needs_pretrained = False
    description_option = ""  # the option that gives the description matrix (a name: a built-in digit set)

    @staticmethod
    def built_in(description) -> bool:
        """Whether a description option names a built-in digit set (rows ``"0"``-``"9"``)."""
        return description is None or is_digit_set(description)

    @classmethod
    def reads_class_text(cls, options: dict) -> bool:
        """Whether the descriptions are text embeddings of the class names (``text[:ENCODER]``)."""
        return False

    @classmethod
    def named_rows(cls, options: dict) -> bool:
        """Whether the description rows built with ``options`` name their classes: a built-in
        digit set, a given ``class_names`` or a ``{class: row}`` dict."""
        description = options.get(cls.description_option)
        return cls.built_in(description) or isinstance(description, dict) or options.get("class_names") is not None

    @classmethod
    def option_row_names(cls, options: dict) -> list[str] | None:
        """The class of each description row built with ``options`` (``None``: unnamed rows)."""
        given = options.get("class_names")
        if given is None and isinstance(options.get(cls.description_option), dict):  # {class: row}
            given = list(options[cls.description_option])
        if given is not None and not isinstance(given, str) and hasattr(given, "__iter__"):  # a list, tuple, array
            return [unicodedata.normalize("NFC", str(c)) for c in given]
        return [str(i) for i in range(10)] if given is None and cls.built_in(options.get(cls.description_option)) \
            else None

    @classmethod
    def check_described(cls, options: dict, classes) -> None:
        """Refuse, before any training, classes that no description row built with ``options``
        describes (a run or ``Transfer`` matches classes to rows by name), and a class named
        for two rows."""
        rows = cls.option_row_names(options)
        twice = repeated(rows or [])
        check(not twice, f"{cls.name}: class_names names {twice} more than once (one description row per class)")
        missing = [c for c in dict.fromkeys(str(c) for c in classes) if rows is not None and c not in rows]
        hint = (f"the built-in digit {cls.description_option} describe the digits 0-9: give a matrix with one row per "
                f"class ({cls.description_option}) and the class of each row (class_names)"
                if cls.built_in(options.get(cls.description_option)) and options.get("class_names") is None
                else "add their rows, or leave those classes out")
        check(not missing, f"{cls.name}: the classes {missing[:10]} have no description (its rows describe "
                           f"{rows[:10] if rows else rows}): {hint}")

    def __init__(self, net, num_classes: int, class_names=None, digit_descriptions: bool = False,
                 rows_text: str | None = None):
        super().__init__(net)
        self.register_buffer("candidates", torch.ones(num_classes, dtype=torch.bool))
        self._candidates_given = False
        self.digit_descriptions = digit_descriptions  # a built-in digit attribute set: class i must be digit i
        #: how messages name the description rows (:func:`described_by`: the file, or ``the OPTION matrix``)
        self.rows_text = rows_text or f"the {self.description_option} matrix"
        if class_names is None and digit_descriptions:
            class_names = [str(i) for i in range(num_classes)]
        check(class_names is None or listed_names(class_names),
              f"{self.name}: class_names must be a list of names, one per row of {self.rows_text}, got "
              f"{class_names!r}")
        named = [] if class_names is None else list(class_names)
        twice = repeated(named)
        check(not twice, f"{self.name}: class_names names {twice} more than once (one description row per class)")
        check(class_names is None or len(class_names) == num_classes,
              f"{self.name}: {self.rows_text} has {num_classes} rows while class_names lists {len(named)} "
              f"classes: give one row per class of class_names, in its order")
        given = [unicodedata.normalize("NFC", str(c)) for c in named]
        #: the class each description row describes (``None``: rows are class ids); a run or
        #: ``Transfer`` maps domains to these rows by class name (:meth:`to_rows`)
        self.row_names = None if class_names is None else given  # in Domain's Unicode form (NFC)
        self.output_rows: list[int] | None = None  # forward's columns: the target classes' rows

    def to_rows(self, domain):
        """``domain`` with labels renumbered to the description rows of its class names."""
        return renumbered(domain, self.row_names, f"{self.name}: ", "have no description (its rows describe {names})")

    def check_classes(self, source_classes, target_classes) -> None:
        """Refuse, before any training, source or target classes past the last description row
        when the rows are unnamed (row ``i`` describes class id ``i``); named rows are matched by
        name (:meth:`check_described`). Warns when every target class is a source class: the model
        trains on them, so its accuracy is supervised, not zero-shot."""
        if source_classes is not None and target_classes is not None and len(target_classes) and \
                {str(c) for c in target_classes} <= {str(c) for c in source_classes}:
            warn(f"{self.name}: every target class ({[str(c) for c in target_classes][:10]}) is a source class it "
                 f"trains on, so its accuracy is supervised, not zero-shot: for zero-shot give source classes "
                 f"without the target's (e.g. source_classes: 0-6 with target_classes: 7-9)")
        if self.row_names is not None:
            return
        rows = len(self.candidates)
        for role, classes in (("source", source_classes), ("target", target_classes)):
            classes = [] if classes is None else list(classes)
            lacking = [str(c) for c in classes[rows:]]
            check(not lacking, f"{self.name}: {self.rows_text} has {rows} rows, read as the class ids 0-{rows - 1} "
                               f"(no class_names), but the {role} has {len(classes)} classes: the {role} classes "
                               f"{lacking[:10]} have no row; add their rows, in class-id order, or leave those classes "
                               f"out")

    def set_candidates(self, classes=None) -> None:
        """Restrict predictions to ``classes`` (ids); ``None``: every class."""
        mask = torch.ones_like(self.candidates) if classes is None else torch.zeros_like(self.candidates)
        if classes is not None:
            mask[class_ids(classes, len(mask), "candidate classes")] = True
        self.candidates.copy_(mask)
        self._candidates_given = True

    def prepare(self, domains):
        super().prepare(domains)
        source = domains.get("source")
        for role, d in domains.items():
            check(d is None or not self.digit_descriptions or d.class_names == [str(i) for i in range(d.num_classes)],
                  f"{self.name}: its built-in attribute sets describe the digits 0-9 (class i is digit i), but the "
                  f"{role} classes are {d and d.class_names[:10]}: give a matrix with one row per class "
                  f"(attributes / class_embeddings)")
        for role, d in domains.items():  # unnamed rows are class ids: a folder's ids are its alphabetical order
            if d is not None and self.row_names is None and not self.digit_descriptions and \
                    list(d.class_names) != [str(i) for i in range(d.num_classes)]:
                warn(f"{self.name}: the rows of its {self.description_option} matrix have no class names: row i is "
                     f"class id i, and the {role} classes {list(d.class_names)[:10]} are ids in their own order (a "
                     f"folder's: alphabetical); give class_names, the class of each row, to match them by name")
                break
        for role, d in domains.items():  # rows are read as class ids: a domain must be in the rows' order
            check(d is None or self.row_names is None or list(d.class_names) == self.row_names[:d.num_classes],
                  f"{self.name}: the {role} classes {d and list(d.class_names)[:10]} are not the description rows "
                  f"{(self.row_names or [])[:10]} in their order: map the domain with method.to_rows(domain) "
                  f"(Transfer and transferkit run do)")
        check(source is None or source.num_classes <= len(self.candidates),
              f"the source domain has {source and source.num_classes} classes but the method describes "
              f"{len(self.candidates)} (one attribute / embedding row per class)")
        if source is not None:  # trained on the seen classes alone, whatever was set for predictions
            self.trained_rows = list(source.present_classes())  # evaluate_zero_shot checks seen against them
            given = self._candidates_given
            self.set_candidates(source.present_classes())
            self._candidates_given = given

    def fit_transfer(self, make_engine, source=None, target=None, unlabeled=None, val=None):
        """Train on the seen classes; candidates set before (:meth:`set_candidates`) are the
        prediction candidates again afterwards."""
        given = self.candidates.clone() if self._candidates_given else None
        try:
            return super().fit_transfer(make_engine, source=source, target=target, unlabeled=unlabeled, val=val)
        finally:
            if given is not None:
                self.candidates.copy_(given)

    def class_scores(self, x: torch.Tensor) -> torch.Tensor:
        """``N x C`` scores of every class for engine inputs ``x``."""
        raise NotImplementedError

    def forward_from_input(self, x):
        scores = self.class_scores(x)  # masked with MASKED, or below a row's lowest score where that lies under it
        if not len(scores):
            return scores
        fill = (2 * scores.detach().amin(1, keepdim=True) - 1).clamp(max=MASKED)
        return torch.where(self.candidates, scores, fill)

    def forward(self, images):
        scores = self.forward_from_input(images)
        return scores if self.output_rows is None else scores[:, self.output_rows]

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Unmasked ``N x C`` class scores of images (eval mode, batched; computed on the model's
        device, returned on the device of ``images``; every module's mode is restored after)."""
        saved, self.input_unit = self.input_unit, self.net.unit_names[0]
        dev = self.candidates.device
        try:
            with evaluating(self), torch.no_grad():
                return predict_logits(lambda x: self.class_scores(x.to(dev)), images)
        finally:
            self.input_unit = saved


@register
class AttributeZeroShot(_ClassDescriptionMethod):
    """Image -> attribute predictor trained with BCE on the seen classes; classes scored by
    the similarity of the predicted attributes to their attribute vectors (seed 001, see the
    module docstring). ``attributes``: a ``C x A`` matrix in [0, 1]; a ``.npy`` / ``.csv`` (commas)
    / ``.txt`` (spaces) file of one, numbers only, one row per class (no header row or class-name
    column); a ``{class: row}`` dict, whose keys are its ``class_names``; or a built-in digit set
    name (``strokes``, ``zones``, ``strokes+zones``; default ``strokes``, whose rows are the digits
    ``"0"``-``"9"``). ``class_names``: the class of each row of a given matrix or file, by which a
    run or ``Transfer`` matches domains to rows (without it, class ids are the rows, and a class id
    past the last row is refused before training)."""

    name = "attribute_zsl"
    description_option = "attributes"
    description = "zero-shot: predict attributes, pick the class with the most similar attribute vector (seed 001)"

    def __init__(self, net, attributes=None, metric: str = "dap", class_names=None):
        attributes, class_names = rows_by_class(attributes, class_names, "attributes")
        a = attribute_matrix(attributes)
        super().__init__(net, a.shape[0], class_names, digit_descriptions=self.built_in(attributes),
                         rows_text=described_by("attributes", attributes))
        if metric not in METRICS:
            raise UnknownNameError("attribute metric", metric, METRICS)
        fractional = int(((a > 0) & (a < 1)).sum())
        if metric == "dap" and fractional and not self.built_in(attributes):
            warn(f"attribute_zsl: {fractional} of the {a.numel()} attribute values lie strictly between 0 and 1; "
                 f"metric dap (a cross entropy) then favours classes whose attributes are near 0 or 1, whatever "
                 f"the image; metric: kl scores -KL(a_c || p) instead, the same ranking as dap on 0/1 attributes")
        self.metric = metric
        self.register_buffer("class_attributes", a)
        net.reset_classifier(a.shape[1])

    def prepare(self, domains):
        super().prepare(domains)
        if domains.get("source") is not None:
            a = self.class_attributes[self.trained_rows]
            constant = torch.nonzero(a.amax(0) == a.amin(0)).flatten().tolist()
            if constant and len(self.trained_rows) > 1:
                warn(f"attribute_zsl: the attributes {constant[:10]} (columns) have one value over every seen class: "
                     f"their predictor learns a constant, so they cannot tell unseen classes apart (add seen classes "
                     f"that differ in them, or leave them out)")

    def attribute_logits(self, x):
        return self.net.forward_units(x, self.input_unit)

    def losses(self, batch):
        x, y = batch.source
        return {"bce_attributes": F.binary_cross_entropy_with_logits(self.attribute_logits(x),
                                                                     self.class_attributes[y])}

    def class_scores(self, x):
        return attribute_scores(self.attribute_logits(x), self.class_attributes, self.metric)


#: how attribute_zsl compares predicted attributes with a class's (:func:`attribute_scores`)
METRICS = ("dap", "kl", "euclidean")


def attribute_scores(attribute_logits: torch.Tensor, class_attributes: torch.Tensor,
                     metric: str = "dap") -> torch.Tensor:
    """``N x C`` similarity of predicted attributes ``p = sigmoid(logits)`` to each class
    vector ``a_c``: ``dap`` = ``sum_k a_ck log p_k + (1 - a_ck) log(1 - p_k)`` (the log
    likelihood of the class's attributes, DAP's rule with uniform attribute priors);
    ``kl`` = ``-KL(a_c || p)`` = ``dap + H(a_c)``,
    which differs from ``dap`` by a per-class constant, zero for 0/1 attributes: for
    attributes between 0 and 1, ``dap`` adds ``-H(a_c)`` and so favours classes whose
    attributes are near 0 or 1 whatever the image; ``euclidean`` = ``-||p - a_c||^2``."""
    if metric in ("dap", "kl"):
        scores = F.logsigmoid(attribute_logits) @ class_attributes.t() + \
            F.logsigmoid(-attribute_logits) @ (1 - class_attributes).t()
        if metric == "kl":
            a = class_attributes
            scores = scores - (torch.xlogy(a, a) + torch.xlogy(1 - a, 1 - a)).sum(1)
        return scores
    if metric == "euclidean":
        return -torch.cdist(torch.sigmoid(attribute_logits), class_attributes).pow(2)
    raise UnknownNameError("attribute metric", metric, METRICS)


@register
class EmbeddingZeroShot(_ClassDescriptionMethod):
    """``logits_c = s cos(f(x), g(e_c))`` with ``f`` = backbone embedding + linear projection and
    ``g`` a trainable linear map of the class description ``e_c`` (attributes or a frozen text
    embedding of the class name); cross entropy over the seen classes (seed 001 "attribute
    embedding + class name embedding", ``min d(f(x^n), g(y^n))``: a pull toward the own class;
    the cross entropy also pushes away from the other seen classes, a deviation, docs/zeroshot.md).
    ``class_embeddings``: a
    ``C x D`` matrix, a ``.npy`` / ``.csv`` / ``.txt`` file of it or a ``{class: row}`` dict (as
    ``attributes``), a built-in digit attribute set by name, or ``text`` / ``text:ENCODER`` (the
    text embeddings of the ``class_names``:
    :func:`~transferkit.text.class_text_embeddings` with ``templates``; in a run or
    ``Transfer``, ``class_names`` defaults to the source's and the target's classes).
    ``class_names``: as for :class:`AttributeZeroShot`."""

    name = "embedding_zsl"
    description_option = "class_embeddings"
    description = "zero-shot: image and class-description embeddings trained to be close (seed 001)"

    @classmethod
    def reads_class_text(cls, options: dict) -> bool:
        e = options.get(cls.description_option)
        return isinstance(e, str) and e.split(":")[0] == "text"

    def __init__(self, net, class_embeddings=None, dim: int = 64, scale: float = 10.0, class_names=None,
                 templates=None):
        class_embeddings, class_names = rows_by_class(class_embeddings, class_names, "class_embeddings")
        check(templates is None or self.reads_class_text({self.description_option: class_embeddings}),
              f"{self.name}: templates {templates!r} fill prompts with class names for class_embeddings text or "
              f"text:ENCODER; these class_embeddings ({described_by('class_embeddings', class_embeddings)}) are not "
              f"text, so the templates would be ignored: leave them out")
        e = description_rows(class_embeddings, class_names, templates)
        super().__init__(net, e.shape[0], class_names, digit_descriptions=self.built_in(class_embeddings),
                         rows_text=described_by("class_embeddings", class_embeddings))
        self.register_buffer("class_embeddings", e.clone())
        self.image_proj, self.class_proj = within_memory(
            self.name, lambda: (nn.Linear(net.embed_dim, dim), nn.Linear(e.shape[1], dim)), dim=dim)
        self.scale = scale

    def trainable_units(self):
        return self.net.feature_names

    def param_groups(self):
        return [{"params": self.net.parameters_of(self.trainable_units())},
                {"params": list(self.image_proj.parameters()) + list(self.class_proj.parameters())}]

    def class_scores(self, x):
        f = F.normalize(self.image_proj(self.net.forward_units(x, self.input_unit, "embedding")), dim=1)
        g = F.normalize(self.class_proj(self.class_embeddings), dim=1)
        return self.scale * f @ g.t()

    def losses(self, batch):
        x, y = batch.source
        return {"ce_source": self.cross_entropy(self.forward_from_input(x), y, "source")}


def description_rows(class_embeddings, class_names=None, templates=None) -> torch.Tensor:
    """The ``C x D`` class descriptions of :class:`EmbeddingZeroShot`'s ``class_embeddings``."""
    if EmbeddingZeroShot.built_in(class_embeddings):
        return attribute_matrix(class_embeddings)
    if not isinstance(class_embeddings, str):
        return description_matrix(class_embeddings, "class_embeddings")
    if Path(class_embeddings).suffix.lower() in MATRIX_FILES:
        return description_matrix(matrix_file(class_embeddings, "class_embeddings"),
                                  f"class_embeddings {class_embeddings!r}")
    kind, _, encoder = class_embeddings.partition(":")
    check(kind == "text", f"class_embeddings {class_embeddings!r}: give a matrix, a .npy / .csv / .txt file of one, "
                          f"a built-in digit set ({', '.join([*DIGIT_SETS, '+'.join(DIGIT_SETS)])}), or text / "
                          f"text:ENCODER (text embeddings of the class names)")
    check(listed_names(class_names) and len(class_names) >= 2,
          f"class_embeddings {class_embeddings!r} embeds the class names: give class_names (a list of 2 or more)")
    return class_text_embeddings([str(c) for c in class_names], encoder or DEFAULT_TEXT_MODEL, templates)


def class_ids(classes, num_classes: int, what: str) -> torch.Tensor:
    """``classes`` as a non-empty tensor of distinct ids in ``[0, num_classes)``."""
    ids = errors_class_ids(list(classes), what).tolist()
    check(len(ids) > 0, f"{what}: empty list")
    check(len(set(ids)) == len(ids), f"{what}: repeated ids in {ids}")
    check(min(ids) >= 0 and max(ids) < num_classes, f"{what}: ids must lie in [0, {num_classes - 1}], got {ids}")
    return torch.tensor(ids, dtype=torch.long)


def mean_class_accuracy(pred: torch.Tensor, labels: torch.Tensor, classes) -> float:
    """Accuracy averaged over ``classes`` (those with test samples), the GZSL convention."""
    accs = [fraction_correct(pred[labels == c], labels[labels == c]) for c in classes if bool((labels == c).any())]
    check(len(accs) > 0, "no test sample of the requested classes")
    return sum(accs) / len(accs)


def _seen_unseen(scores: torch.Tensor, seen, unseen) -> tuple[list[int], list[int]]:
    """Seen and unseen class ids, checked against the score columns and for overlap."""
    check(isinstance(scores, torch.Tensor) and scores.dim() == 2 and scores.is_floating_point(),
          f"scores must be an N x C float tensor, got {type(scores).__name__} {getattr(scores, 'dtype', '')} "
          f"{tuple(getattr(scores, 'shape', ()))}")
    check(not bool(scores.isnan().any()), "the scores have NaN values (a diverged model?)")
    for name, ids in (("seen", seen), ("unseen", unseen)):
        check(not isinstance(ids, str), f"{name} must be class ids (a list of ints), got the string {ids!r}")
    seen = class_ids(seen, scores.shape[1], "seen classes").tolist()
    unseen = class_ids(unseen, scores.shape[1], "unseen classes").tolist()
    check(not set(seen) & set(unseen), f"seen and unseen classes overlap: {sorted(set(seen) & set(unseen))}")
    return seen, unseen


def zero_shot_report(scores: torch.Tensor, labels: torch.Tensor, seen, unseen, gamma: float = 0.0) -> dict:
    """From ``N x C`` unmasked scores: ``zsl`` (unseen test samples, unseen candidates only),
    GZSL ``seen`` / ``unseen`` accuracies with every seen and unseen class a candidate (other
    score columns are left out) and their harmonic
    mean ``h``; ``gamma`` is subtracted from seen scores (calibrated stacking, Chao et al.
    2016). Accuracies are per-class means."""
    seen, unseen = _seen_unseen(scores, seen, unseen)
    labels = errors_class_ids(labels, "zero_shot_report labels")  # one whole id per image (N x 1 refused)
    check(len(labels) == len(scores), f"{len(scores)} score rows for {len(labels)} labels")
    stray = sorted(set(labels.tolist()) - set(seen) - set(unseen))
    check(not stray, f"labels {stray[:10]} are neither seen nor unseen classes")
    check(isinstance(gamma, numbers.Real) and not isinstance(gamma, bool) and not math.isnan(gamma),
          f"gamma must be a number, got {gamma!r}")
    is_unseen = torch.isin(labels, torch.tensor(unseen, device=labels.device))
    for name, ids, has in (("seen", seen, ~is_unseen), ("unseen", unseen, is_unseen)):
        check(bool(has.any()), f"no test image of the {name} classes {ids}: the GZSL report needs test images "
                               f"of both seen and unseen classes")
    absent = [c for c in seen + unseen if not bool((labels == c).any())]
    if absent:
        warn(f"the classes {absent[:10]} have no test image: they are left out of the per-class means (seen, unseen, "
             f"zsl)")
    masked = torch.full_like(scores, -math.inf)  # below any score (MASKED is not: scores may lie under -1e9)
    masked[:, unseen] = scores[:, unseen]
    zsl = mean_class_accuracy(masked[is_unseen].argmax(1), labels[is_unseen], unseen)
    calibrated = scores.clone()
    calibrated[:, seen] -= gamma
    keep = torch.isin(torch.arange(scores.shape[1], device=scores.device), torch.tensor(seen + unseen,
                                                                                        device=scores.device))
    pred = calibrated.masked_fill(~keep, -math.inf).argmax(1)
    s = mean_class_accuracy(pred[~is_unseen], labels[~is_unseen], seen)
    u = mean_class_accuracy(pred[is_unseen], labels[is_unseen], unseen)
    return {"zsl": zsl, "seen": s, "unseen": u, "h": harmonic_mean(s, u)}


def prior_matched_gamma(scores: torch.Tensor, seen, unseen, unseen_fraction: float | None = None) -> float:
    """Calibrated-stacking ``gamma`` chosen without labels: the smallest ``gamma`` for which the
    fraction of the (unlabelled) samples predicted as unseen reaches ``unseen_fraction``
    (default ``|U| / (|S| + |U|)``, the class prior when classes are balanced). With
    ``m_i = max_seen s_i - max_unseen s_i``, a sample goes to an unseen class iff
    ``m_i < gamma``, so ``gamma`` is the ``unseen_fraction`` quantile of ``m`` (linearly
    interpolated between order statistics: the fraction reached is the target up to one
    sample, e.g. 2/7 for 0.3 of 7 samples; ``gamma`` is the quantile plus 1e-6, so margins
    within 1e-6 above it, ties among them, count as unseen too and may take the fraction past
    the target). Transductive: it reads the scores of the evaluation pool, never its labels."""
    check(scores.dim() == 2 and scores.shape[0] > 0,
          f"scores must be a non-empty N x C matrix, got shape {tuple(scores.shape)}")
    seen, unseen = _seen_unseen(scores, seen, unseen)
    check(bool(torch.isfinite(scores).all()), "the scores have infinite values: the calibration margins would be NaN")
    check(len(seen) > 0 and len(unseen) > 0, "calibration needs seen and unseen classes")
    q = len(unseen) / (len(seen) + len(unseen)) if unseen_fraction is None else float(unseen_fraction)
    check(0.0 < q < 1.0, f"unseen_fraction must lie in (0, 1), got {q}")
    margin = scores[:, seen].max(1).values - scores[:, unseen].max(1).values
    return float(torch.quantile(margin.double(), q)) + 1e-6


def renumbered(domain: Domain, names: list[str], who: str, lacking: str) -> Domain:
    """``domain`` with labels renumbered to the positions of its class names in ``names``."""
    missing = [c for c in domain.class_names if c not in names]
    check(not missing, f"{who}classes {missing} of domain {domain.name!r} {lacking.format(names=names[:10])}")
    ids = torch.tensor([names.index(c) for c in domain.class_names], dtype=torch.long)
    return dataclasses.replace(domain, labels=ids[domain.labels], class_names=list(names),
                               provenance=dict(domain.provenance))  # its groups and sample keys kept


def scored_classes(method) -> tuple[list[str] | None, list[int] | None]:
    """The class names of ``method.scores``' columns (``None``: class ids) and the columns of
    the classes it was trained on (``None``: unknown, e.g. a model saved before 2026-12-02),
    for a zero-shot method (attribute_zsl, embedding_zsl, clip); else a named error."""
    if isinstance(method, _ClassDescriptionMethod):
        return method.row_names, getattr(method, "trained_rows", None)
    names = getattr(method, "class_names", None)
    check(getattr(type(method), "scores_class_names", False) and hasattr(method, "scores"),
          f"evaluate_zero_shot takes a zero-shot method (attribute_zsl, embedding_zsl, clip), got "
          f"{getattr(method, 'name', type(method).__name__)}")
    check(names is not None, f"{method.name} has no classes to score: give them with method.set_classes(names)")
    trained = getattr(method, "trained_classes", None)
    return names, None if trained is None else [names.index(c) for c in trained if c in names]


def _row_ids(names: list[str] | None, classes, what: str) -> list:
    """``classes`` as score columns: ids as given, class names through ``names``."""
    classes = [classes] if isinstance(classes, (str, int)) else list(classes)
    if not any(isinstance(c, str) for c in classes):
        return classes
    check(names is not None, f"{what} are given by name, but the method's description rows have no "
                             f"class names (give class_names, or row ids)")
    unknown = [c for c in classes if isinstance(c, str) and c not in names]
    check(not unknown, f"{what}: {unknown} are not described classes ({names})")
    return [names.index(c) if isinstance(c, str) else c for c in classes]


def is_zero_shot(method) -> bool:
    """Whether ``method`` scores class descriptions (attribute_zsl, embedding_zsl, clip)."""
    return isinstance(method, _ClassDescriptionMethod) or getattr(type(method), "scores_class_names", False)


def seen_columns(method) -> list[int] | None:
    """The output columns (of ``method(images)``) of the classes a zero-shot method was trained
    on; ``None`` for another method, or a model that did not record them (saved before 2026-12-02)."""
    if isinstance(method, _ClassDescriptionMethod):
        trained = getattr(method, "trained_rows", None)
        rows = range(len(method.candidates)) if method.output_rows is None else method.output_rows
        return None if trained is None else [j for j, r in enumerate(rows) if r in trained]
    names, trained = getattr(method, "class_names", None), getattr(method, "trained_classes", None)
    if not getattr(type(method), "scores_class_names", False) or names is None or trained is None:
        return None
    return [j for j, c in enumerate(names) if c in trained]


def calibrated(logits: torch.Tensor, seen: list[int], gamma: float | str) -> tuple[torch.Tensor, float]:
    """``logits`` with ``gamma`` subtracted from the ``seen`` columns (calibrated stacking;
    ``"prior"``: :func:`prior_matched_gamma` of these logits, unlabelled) and the ``gamma`` used."""
    check(gamma == "prior" or isinstance(gamma, (int, float)) and not isinstance(gamma, bool) and math.isfinite(gamma),
          f"gzsl_gamma must be a number or 'prior', got {gamma!r}")
    unseen = [j for j in range(logits.shape[1]) if j not in seen]
    if gamma == "prior":
        check(len(seen) > 0 and len(unseen) > 0, "gzsl_gamma='prior' needs seen and unseen classes among the outputs")
        gamma = prior_matched_gamma(logits, seen, unseen)
    out = logits.clone()
    out[:, seen] -= float(gamma)
    return out, float(gamma)


def _check_trained(names: list[str] | None, trained: list[int] | None, seen: list[int], unseen: list[int]) -> None:
    """Refuse seen classes the model was not trained on and unseen ones it was trained on."""
    if trained is None:
        return
    shown = (lambda ids: [names[i] if names and 0 <= i < len(names) else i for i in sorted(ids)])  # noqa: E731
    wrong = set(unseen) & set(trained)
    check(not wrong, f"the unseen classes {shown(wrong)} are classes the model was trained on (its seen classes are "
                     f"{shown(trained)}): give those as seen")
    wrong = set(seen) - set(trained)
    check(not wrong, f"the seen classes {shown(wrong)} are classes the model was not trained on (its seen classes "
                     f"are {shown(trained)}): give those as unseen")
    if set(trained) - set(seen):
        warn(f"the classes {shown(set(trained) - set(seen))} the model was trained on are neither seen nor unseen "
             f"here: they are left out of the candidates")


def evaluate_zero_shot(method, test: Domain, seen, unseen, gamma: float | str = 0.0) -> dict:
    """:func:`zero_shot_report` of a trained zero-shot method (attribute_zsl, embedding_zsl, or
    clip over the classes it scores) on a test domain holding seen and unseen classes;
    ``gamma="prior"`` uses :func:`prior_matched_gamma` on the test scores (the chosen value is
    returned as ``gamma``). ``seen`` / ``unseen``: score columns (description rows; clip's
    classes), by id or by class name; the seen classes must be those the model was trained on.
    When the columns name their classes (``method.row_names``, clip's ``class_names``), the test
    labels are mapped to them by class name, so a test domain of a class subset or in another
    class order is scored against the right rows."""
    check(gamma == "prior" or isinstance(gamma, (int, float)) and not isinstance(gamma, bool),
          f"gamma must be a number or 'prior', got {gamma!r}")
    names, trained = scored_classes(method)
    shape = getattr(method.net, "input_shape", None)
    check(shape is None or tuple(test.image_shape) == tuple(shape),
          f"test domain {test.name!r} has images of shape {tuple(test.image_shape)}, the network takes "
          f"{shape and tuple(shape)}")
    if names is not None:
        test = renumbered(test, names, f"{method.name}: ", "are not among the classes it scores, {names}")
    seen, unseen = _row_ids(names, seen, "seen classes"), _row_ids(names, unseen, "unseen classes")
    scores = method.scores(test.images)
    seen, unseen = _seen_unseen(scores, seen, unseen)
    _check_trained(names, trained, seen, unseen)
    if gamma == "prior":
        gamma = prior_matched_gamma(scores, seen, unseen)
    return {**zero_shot_report(scores, test.labels, seen, unseen, float(gamma)), "gamma": float(gamma)}
