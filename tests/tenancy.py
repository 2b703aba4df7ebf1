"""Tenancy test support: route enumeration and the per-app registry of URL kwargs.

Each app's tests may hold a `tests/<app>/tenancy.py` with
    URL_KWARGS = {"dataset_id": lambda project, user: <id of a new object in `project`>}
and the generic cross-tenant test (tests/test_tenancy.py) uses them to fill every route of every
surface with objects of another project. A route whose kwarg nobody registered fails the test.
"""

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.urls import URLPattern, URLResolver, get_resolver

import tests


@dataclass(frozen=True)
class Route:
    pattern: str  # e.g. "api/projects/<project_id>/members/<username>"
    callback: Callable
    name: str | None
    kwargs: tuple[str, ...]

    @property
    def view_class(self):
        return getattr(self.callback, "cls", None) or getattr(self.callback, "view_class", None)

    @property
    def methods(self) -> list[str]:
        cls = self.view_class
        actions = getattr(self.callback, "actions", None)
        if actions:
            return sorted(
                m.upper() for m in actions if m in ("get", "post", "put", "patch", "delete")
            )
        if cls is None:
            return ["GET"]
        return sorted(
            m.upper() for m in ("get", "post", "put", "patch", "delete") if hasattr(cls, m)
        )

    def url(self, **values: str) -> str:
        url = "/" + self.pattern
        for key in self.kwargs:
            url = url.replace(f"<{key}>", str(values[key]))
        return url


def _regex_to_template(regex: str) -> tuple[str, tuple[str, ...]]:
    import re

    names = []

    def repl(m):
        names.append(m.group(1))
        return f"<{m.group(1)}>"

    template = re.sub(r"\(\?P<(\w+)>[^)]*\)", repl, regex)
    template = template.replace("^", "").replace("$", "").replace("\\Z", "").replace("\\", "")
    template = re.sub(r"\(\?:([^)]*)\)", r"\1", template)
    template = template.replace("/?", "")
    return template, tuple(names)


def iter_routes() -> Iterator[Route]:
    def walk(patterns, prefix=""):
        for p in patterns:
            if isinstance(p, URLResolver):
                yield from walk(p.url_patterns, prefix + _pattern_text(p))
            elif isinstance(p, URLPattern):
                text, names = _regex_to_template(prefix + _pattern_text(p))
                yield Route(text, p.callback, p.name, names)

    yield from walk(get_resolver().url_patterns)


def _pattern_text(p) -> str:
    pattern = p.pattern
    if hasattr(pattern, "_route"):  # RoutePattern
        import re

        return re.sub(r"<(?:\w+:)?(\w+)>", r"(?P<\1>x)", str(pattern._route))
    return pattern.regex.pattern


def url_kwarg_factories() -> dict[str, Callable]:
    """Every app's registered URL kwarg factories (project, user) -> value."""
    registry: dict[str, Callable] = {}
    for module in pkgutil.iter_modules(tests.__path__):
        if not module.ispkg:
            continue
        try:
            mod = importlib.import_module(f"tests.{module.name}.tenancy")
        except ModuleNotFoundError as exc:
            if exc.name != f"tests.{module.name}.tenancy":
                raise
            continue
        registry.update(getattr(mod, "URL_KWARGS", {}))
    return registry
