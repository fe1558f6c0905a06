"""``python -m transferkit ...``: the ``transferkit`` command."""

from .cli import entry

if __name__ == "__main__":
    entry()
