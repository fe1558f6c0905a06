"""Name registries (methods, backbones, domains) that refuse to give a taken name to another definition."""

import re

from .errors import TransferkitError


def without_addresses(text: str) -> str:
    """``text`` (a ``repr``) without memory addresses (`` at 0x7f...``), which differ from one process to the next."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def qualified_name(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


class Registry(dict):
    """A ``{name: class or builder}`` dict whose assignment refuses a name held by another
    definition (a plugin that would silently replace a built-in); the same one assigned again,
    or one defined at the same place (its module imported again), replaces it."""

    def __init__(self, kind: str, fix: str, *args, home: str = "", **kwargs):
        self.kind, self.fix, self.home = kind, fix, home  # home: where it is imported from, for `del HOME[name]`
        super().__init__()
        self.update(*args, **kwargs)

    def defined_at(self, value) -> str:
        """Where ``value`` is defined (module and qualified name): two values defined at the same
        place are one definition, imported again."""
        return qualified_name(value)

    def __setitem__(self, name, value) -> None:
        held = self.get(name)
        if held is not None and held is not value and self.defined_at(held) != self.defined_at(value):
            module, _, variable = self.home.rpartition(".")
            drop = (f"; or drop the one registered before (a re-run notebook cell?): `from {module} import "
                    f"{variable}; del {variable}[{name!r}]`" if self.home and not
                    self.defined_at(held).startswith("transferkit.") else "")  # never a shipped one
            raise TransferkitError(f"{self.kind} name {name!r} is taken by {self.defined_at(held)}; "
                                   f"{self.defined_at(value)} cannot register under it: {self.fix}{drop}")
        super().__setitem__(name, value)

    def update(self, *args, **kwargs) -> None:
        for name, value in dict(*args, **kwargs).items():
            self[name] = value

    def __ior__(self, other):  # dict's |= would skip __setitem__
        self.update(other)
        return self

    def setdefault(self, name, value=None):
        if name not in self:
            self[name] = value
        return self[name]

    def __reduce__(self):
        return type(self), (self.kind, self.fix, dict(self)), {"home": getattr(self, "home", "")}
