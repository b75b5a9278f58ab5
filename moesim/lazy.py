"""Names a package exports from its modules, imported on first use (PEP 562)."""
from __future__ import annotations

from importlib import import_module


def lazy_exports(package: str, namespace: dict, homes: dict[str, str]):
    """(``__getattr__``, ``__dir__``) for ``package``: ``homes`` maps each public name to the
    module defining it; the first access imports that module and caches the name in
    ``namespace`` (the package's globals)."""

    def __getattr__(name: str):
        if name not in homes:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(import_module(homes[name]), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(homes))

    return __getattr__, __dir__
