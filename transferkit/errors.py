"""User-facing errors: the CLI prints these without a traceback and exits with code 2."""

import contextlib
import dataclasses
import difflib
import numbers
import os
import signal
import sys
import threading
import warnings


class TransferkitError(Exception):
    """A mistake in the user's input (unknown name, bad shape, bad config...), not a bug."""


class UntrustedPickle(TransferkitError):
    """A file that only unpickling reads (a run's ``models/*.pt``), which runs whatever code it names:
    not read without the caller's opt-in (``trust_pickles``, ``--trust-pickles``)."""


class WorkerDied(TransferkitError):
    """A worker process ended without handing back its job (killed: the out-of-memory killer,
    ``kill -9``). The rows of finished jobs are kept; the CLI prints ``reason`` with the command
    that resumes."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"{reason}; the jobs that had finished are kept: resume the run or benchmark directory "
                         f"to run the others")

    def __reduce__(self):  # pickle (a process boundary) rebuilds it from reason, not from the full message
        return type(self), (self.reason,)


class JobsFailed(TransferkitError):
    """Some jobs of a run or benchmark raised (each is named, its traceback saved under the
    directory's ``failed/``); the other jobs ran and their results are kept. ``failures``:
    the :class:`~transferkit.jobs.JobFailure` of each; ``rows``: the finished rows (a run's)."""

    def __init__(self, message: str, failures: list, rows: list | None = None):
        super().__init__(message)
        self.failures, self.rows = failures, rows


class TransferkitWarning(UserWarning):
    """transferkit's own warnings (a UserWarning: filters and ``pytest.warns(UserWarning)``
    catch them as before); the CLI prints them as one line."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


@contextlib.contextmanager
def ignored(category: type[Warning] = Warning):
    """Warnings of ``category`` left out inside, by an ``ignore`` filter put first and taken out after rather
    than by ``warnings.catch_warnings``, whose entry and exit make Python forget which warnings it has shown
    (``__warningregistry__``): a warning that a loop of fits gives at one line would come back at every fit.
    An ignored warning writes nothing in the registries, and the other warnings meet the same filters as
    without this one, so the registries stay right. Filters added inside (``simplefilter``) are kept."""
    rule, filters = ("ignore", None, category, None, 0), warnings.filters
    with _IGNORED_LOCK:
        filters.insert(0, rule)
    try:
        yield
    finally:
        with _IGNORED_LOCK:  # found and taken out at once: another thread's insert would move it between
            index = next((i for i, f in enumerate(filters) if f is rule), None)  # not another's equal filter
            if index is not None:
                del filters[index]


#: held by :func:`ignored` while it puts its filter in or takes it out
_IGNORED_LOCK = threading.Lock()


def quiet():
    """transferkit's warnings left out (a repeat of what a check said once; other warnings pass), however
    they are issued (:func:`warn`, a plugin's own ``warnings.warn``); see :func:`ignored`."""
    return ignored(TransferkitWarning)


def is_quiet() -> bool:
    """Whether a transferkit warning issued here is left out (inside :func:`quiet`, or under the caller's
    ``ignore`` filter): a check whose only outcome is a warning may then be skipped. The first filter of a
    matching category decides: an ``ignore`` with no message, module or line pattern leaves it out; any other
    (another action, or one with a pattern, which may not take it) counts as shown."""
    for action, message, category, module, lineno in warnings.filters:
        if issubclass(TransferkitWarning, category):
            return action == "ignore" and message is None and module is None and not lineno
    return False


@contextlib.contextmanager
def interrupts_ignored():
    """Ctrl-C (SIGINT) ignored inside: for the stop that follows a first one (the main thread
    only; elsewhere nothing changes). Here rather than in :mod:`transferkit.jobs` (which still
    offers it), so that the command's stop while torch loads needs no torch."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


#: the files of the decorators that wrap a library function (``@torch.no_grad()``, ``contextlib.ContextDecorator``):
#: a warning is not attributed to them
_WRAPPERS = (os.path.abspath(contextlib.__file__), os.path.join("torch", "utils", "_contextlib.py"))


def _inside(frame) -> bool:
    """Whether ``frame`` is the library's: a transferkit file, a decorator wrapping one of its functions
    (:data:`_WRAPPERS`), or a dataclass's generated ``__init__`` (file ``<string>``) of a transferkit class."""
    name = frame.f_code.co_filename
    if name.startswith(_PACKAGE) or name.endswith(_WRAPPERS):
        return True
    owner = frame.f_locals.get("self") if name == "<string>" else None
    return owner is not None and dataclasses.is_dataclass(owner) and any(
        c.__module__.startswith("transferkit.") for c in type(owner).__mro__)


def warn(message: str) -> None:
    """Issue a :class:`TransferkitWarning` attributed to the first caller outside transferkit (the
    user's line, as pandas does), whatever depth of the library it comes from; the decorators and
    dataclass ``__init__`` that wrap its functions (:func:`_inside`) are passed over too."""
    frame, level = sys._getframe(1), 2
    while frame is not None and _inside(frame):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, TransferkitWarning, stacklevel=level - 1 if frame is None else level)


def progress(*parts) -> None:
    """Print a line of progress or a note on stderr, flushed (the commands' ``log``): stdout is
    for results (tables, the ``results:`` line), so ``> file`` or ``| head`` gets those alone."""
    print(*parts, file=sys.stderr, flush=True)


def near_name(name: str, known: list[str]) -> str | None:
    """The known name ``name`` most likely misspells: the same in another case (``DANN``), two
    letters swapped (``mnsit``), or a close spelling; ``None`` when none is."""
    for same in (lambda k: k.lower() == name.lower(), lambda k: sorted(k.lower()) == sorted(name.lower())):
        hit = next((k for k in known if same(k)), None)
        if hit is not None:
            return hit
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
    return close[0] if close else None


#: how many items a message names before it counts or elides the rest
NAMED = 5


def first_named(items, what: str | None = None, sep: str = ", ") -> str:
    """``items`` (strings) joined by ``sep``, the first :data:`NAMED` of them only, so that a
    message stays short: the rest counted, ``"a, b, c, d, e and 7 more classes"``, where ``what``
    names them (one of them when one more: ``"and 1 more class"``); else elided, ``"a, b, c, d, e, ..."``."""
    items = list(items)
    shown = sep.join(items[:NAMED])
    if len(items) <= NAMED:
        return shown
    if what is None:
        return shown + ", ..."
    more = len(items) - NAMED
    return shown + f" and {more} more {what if more > 1 else _one_of(what)}"


def _one_of(what: str) -> str:
    """The singular of a plural ``what`` whose first word is the noun: ``"jobs"``, ``"job(s)"``, ``"classes"``,
    ``"groups of classes"``."""
    noun, space, rest = what.partition(" ")
    for plural, one in (("(s)", ""), ("sses", "ss"), ("s", "")):
        if noun.endswith(plural):
            return noun[:-len(plural)] + one + space + rest
    return what


class UnknownNameError(TransferkitError, KeyError):
    """An unknown domain, shift, method, backbone, benchmark suite or config key. A known name close
    to it (a typo) is suggested; else ``hint`` (e.g. where a plugin's names come from) is added."""

    def __init__(self, kind: str, name: str, known, hint: str = ""):
        self.kind, self.name, self.known, self.hint = kind, name, sorted(known), hint
        close = near_name(str(name), self.known)
        note = f"did you mean {close!r}?" if close else hint
        known = f"known: {', '.join(self.known)}" if self.known else "there is none"
        super().__init__(f"unknown {kind} {name!r}; {known}" + (f" ({note})" if note else ""))

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]

    def __reduce__(self):  # picklable, so that a worker process can hand it back
        return type(self), (self.kind, self.name, self.known, self.hint)


class UnknownOptionError(UnknownNameError):
    """An option that method ``kind`` (its name) does not take; a close known one is suggested."""

    def __init__(self, kind: str, name: str, known, hint: str = ""):
        self.kind, self.name, self.known, self.hint = kind, name, sorted(known), hint
        close = difflib.get_close_matches(str(name), self.known, n=1, cutoff=0.75)
        note = f"did you mean {close[0]!r}?" if close else f"it takes {', '.join(self.known)}"
        TransferkitError.__init__(self, f"method {kind!r} has no option {name!r}; {note}")


def is_whole(value, minimum: int | None = None) -> bool:
    """``value`` is a whole number (an int or numpy integer, not a bool), ``>= minimum`` if given."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and (minimum is None or value >= minimum)


def torch_seed(seed) -> int:
    """``seed`` as an int that ``torch.manual_seed`` takes as it is: a whole number in
    [-2**63, 2**64) (``1.0`` or ``"1"`` would seed text-keyed streams other than ``1``)."""
    check(is_whole(seed) and -2**63 <= seed < 2**64, f"the seed must be a whole number in [-2**63, 2**64), got "
                                                     f"{seed!r} (1.0 or '1' would give another run than 1)")
    return int(seed)


def check_seed_range(seed: int, name: str = "seed", repeats: int | None = None) -> None:
    """Refuse a seed outside numpy's 0..2**32 - 1, where one seed would alias another's draws; with
    ``repeats`` (a config's), the seeds ``seed .. seed + repeats - 1`` its repeats run with."""
    check(0 <= seed and seed + (1 if repeats is None else repeats) <= 2**32,
          f"{name} must be in 0..2**32 - {1 if repeats is None else 'repeats'} (as numpy's seeds), got {seed}")


def whole_valued(t) -> bool:
    """Every value of tensor ``t`` is a finite whole number (integer dtypes always are)."""
    import torch

    return not t.is_complex() and (not t.is_floating_point() or bool((torch.isfinite(t) & (t == t.round())).all()))


def class_ids(labels, what: str = "labels"):
    """``labels`` as a 1-D ``long`` tensor of class ids, refusing what the cast would change
    (fractions, NaN, infinities, complex or boolean values) and negative ids."""
    import torch  # here, so that importing the errors (the CLI's first import) stays light

    labels = torch.as_tensor(labels)
    whole = labels.dtype != torch.bool and whole_valued(labels)
    check(labels.dim() == 1 and whole, f"{what} must be a 1-D tensor of whole class ids, got shape "
                                       f"{tuple(labels.shape)} of {labels.dtype}"
                                       f"{'' if whole else ' with values that are not whole numbers'}")
    if len(labels):
        low = int(labels.min())
        check(low >= 0, f"{what} must be class ids >= 0, found {low}")
    return labels.long()


def first_line(error: BaseException) -> str:
    """``"TypeError: <the first line of its message>"``: an error of torch or of a user's model,
    quoted in one of ours (tracebacks of multi-line messages stay out of our one-line errors)."""
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"


def check(condition: bool, message: str) -> None:
    """Raise :class:`TransferkitError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise TransferkitError(message)
