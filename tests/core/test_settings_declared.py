"""Every setting apps/ and ml/ read is declared once in config/settings/base.py and documented in
README's configuration table; `apps.core.conf` refuses a name that is not declared.

The walk is static (the AST of every module), so a setting read only on a rare path is checked
too. A read is `setting("X")` / `number_setting("X")` (apps.core.conf and the wrappers that call
it), `getattr(settings, "X", ...)` or `settings.X`.
"""

import ast
import re
from pathlib import Path

import pytest
from django.conf import global_settings
from django.core.exceptions import ImproperlyConfigured

from apps.core.conf import number_setting, setting

ROOT = Path(__file__).resolve().parents[2]
READERS = {"setting", "number_setting"}


def _name(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def settings_read() -> dict[str, list[tuple[str, str]]]:
    """Setting name -> where ("path:line") and how ("conf": a reader call, or "settings") it is
    read."""
    found: dict[str, list[tuple[str, str]]] = {}
    for path in sorted([*ROOT.joinpath("apps").rglob("*.py"), *ROOT.joinpath("ml").rglob("*.py")]):
        where = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            name, how = None, "settings"
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if called in READERS:
                    name, how = _name(node.args[0]), "conf"
                elif (
                    called == "getattr"
                    and isinstance(node.args[0], ast.Name)
                    and node.args[0].id == "settings"
                    and len(node.args) > 1
                ):
                    name = _name(node.args[1])
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "settings"
                and node.attr.isupper()
            ):
                name = node.attr
            if name is not None:
                found.setdefault(name, []).append((f"{where}:{node.lineno}", how))
    return found


def declarations() -> dict[str, list[str]]:
    """Setting name -> the environment variables its declaration in base.py reads."""
    tree = ast.parse((ROOT / "config" / "settings" / "base.py").read_text())
    declared: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and target.id.isupper():
                    declared.setdefault(target.id, []).extend(_env_names(node.value))
    return declared


def _env_names(value: ast.AST | None) -> list[str]:
    """The variables read by `env(...)` / `env.int(...)` etc. in a declaration's value."""
    names = []
    for node in ast.walk(value) if value is not None else ():
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            base = func.value if isinstance(func, ast.Attribute) else func
            if isinstance(base, ast.Name) and base.id == "env" and _name(node.args[0]):
                names.append(node.args[0].value)
    return names


def readme_table() -> set[str]:
    """The names in the first column of README's Configuration table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split(" | ")[0]))
    return names


def test_every_setting_read_is_declared_in_base():
    declared = declarations()
    django_defaults = {name for name in dir(global_settings) if name.isupper()}
    missing = {
        name: where
        for name, where in settings_read().items()
        if name not in declared and name not in django_defaults
    }
    assert not missing, f"settings read but not declared in config/settings/base.py: {missing}"


def test_every_setting_read_is_in_the_readme_table():
    declared, table = declarations(), readme_table()
    undocumented = {}
    for name, reads in settings_read().items():
        if name not in declared:
            continue  # Django's own setting, not an Orchard tunable
        # The environment variables it is read from; a tunable without one (a Django setting
        # only) is documented under its own name, Django's plumbing (AUTH_USER_MODEL...) not.
        tunable = any(how == "conf" for _where, how in reads)
        wanted = declared[name] or ([name] if tunable else [])
        if any(variable not in table for variable in wanted):
            undocumented[name] = wanted
    assert not undocumented, f"add README Configuration rows for: {undocumented}"


def test_every_variable_base_reads_is_in_the_readme_table():
    table = readme_table()
    missing = {
        name: variables
        for name, variables in declarations().items()
        if any(variable not in table for variable in variables)
    }
    assert not missing, f"add README Configuration rows for: {missing}"


def test_the_walk_sees_each_way_of_reading():
    read = settings_read()
    assert "LABELSTUDIO_FETCH_TIMEOUT_S" in read  # number_setting(...)
    assert "MARKETPLACE_TRAIN" in read  # setting(...)
    assert "TASK_SWEEP_INTERVAL_S" in read  # services.setting(...)
    assert "PAGE_SIZE_MAX" in read  # settings.X
    assert "TORCH_THREADS" in declarations()
    assert declarations()["ADMIN_USERNAME"] == ["ORCHARD_ADMIN_USERNAME"]


def test_conf_refuses_an_undeclared_name():
    with pytest.raises(ImproperlyConfigured, match="NOT_A_SETTING"):
        setting("NOT_A_SETTING")
    with pytest.raises(ImproperlyConfigured):
        number_setting("NOT_A_SETTING_EITHER")


def test_conf_reads_the_declared_value(settings):
    settings.PAGE_SIZE_MAX = 7
    assert setting("PAGE_SIZE_MAX") == 7 and number_setting("PAGE_SIZE_MAX") == 7.0
