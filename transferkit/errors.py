"""User-facing errors: the CLI prints these without a traceback and exits with code 2."""

import numbers


class TransferkitError(Exception):
    """A mistake in the user's input (unknown name, bad shape, bad config...), not a bug."""


class UnknownNameError(TransferkitError, KeyError):
    """An unknown domain, shift, method, backbone, benchmark or config key."""

    def __init__(self, kind: str, name: str, known):
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(self.known)}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]

    def __reduce__(self):  # picklable, so that a worker process can hand it back
        return type(self), (self.kind, self.name, self.known)


def is_whole(value, minimum: int | None = None) -> bool:
    """``value`` is a whole number (an int or numpy integer, not a bool), ``>= minimum`` if given."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and (minimum is None or value >= minimum)


def check(condition: bool, message: str) -> None:
    """Raise :class:`TransferkitError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise TransferkitError(message)
