"""Hanami cluster templates: parse, validate and print them.

A template describes a network as bricks placed on a 3-D grid::

    version: 1
    settings:                       # optional
        neuron_cooldown: 100000000000.0
        refractory_time: 1
        max_connection_distance: 1
        enable_reduction: false
    bricks:
        1,1,1
            input: test_input
            number_of_neurons: 784
        2,1,1
            number_of_neurons: 400
        3,1,1
            output: test_output
            number_of_neurons: 10

Format rules (what :func:`parse_template` accepts):

- ``version: 1`` must be the first line with content; only version 1 exists.
- Top-level keys (``version``, ``settings``, ``bricks``) start in column 0, each at most once.
  ``settings:`` is optional, ``bricks:`` is required.
- Indentation is by spaces and nests like YAML: the children of a block share one indentation,
  deeper than their parent's (any depth works; the canonical form uses 4 spaces per level). A
  tab in the indentation advances to the next multiple of 4 columns, so a tab-indented template
  parses like its 4-space twin. CRLF and CR line endings are accepted, ``#`` starts a comment,
  blank lines are ignored.
- Settings: ``neuron_cooldown`` (float), ``refractory_time`` (int >= 0),
  ``max_connection_distance`` (int >= 0, default 1) and ``enable_reduction`` (true/false). They
  are kept (and printed back) but only ``max_connection_distance`` shapes the torch network.
- A brick is a position line ``x,y,z`` (integers of at most 9 digits) followed by
  deeper-indented properties: ``number_of_neurons: N`` (required, 1..MAX_NEURONS_PER_BRICK)
  and at most one of ``input: NAME`` / ``output: NAME`` (1-255 of ``A-Za-z0-9_.-``). Names are
  unique across all bricks.

Connectivity rule (what the network is built from):

- A brick at ``(x, y, z)`` feeds every brick at ``(x + 1, y', z')`` with
  ``|y' - y| <= d`` and ``|z' - z| <= d``, where ``d`` is ``max_connection_distance``.
- Input bricks are sources (nothing feeds them); output bricks are sinks (they feed nothing);
  every other brick is a hidden layer.
- Every output brick must be reachable from an input brick. Bricks that are not on a path from
  an input to an output are accepted but take no part in the network (``Template.live_edges``
  holds only the edges on such paths).

The seed template above therefore becomes ``784 -> 400 -> 10``.

Limits keep a hostile template from allocating gigabytes: at most ``MAX_NEURONS_PER_BRICK``
neurons per brick, ``MAX_BRICKS`` bricks, ``MAX_TEMPLATE_CHARS`` characters, and at most
``MAX_PARAMETERS`` weights and biases in the resulting network.

This module has no torch dependency, so it can validate templates anywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from ml.template_graph import grid_edges, parameter_count, reachable, sinks, sources

__all__ = [
    "MAX_BRICKS",
    "MAX_CONNECTION_DISTANCE",
    "MAX_NEURONS_PER_BRICK",
    "MAX_PARAMETERS",
    "MAX_TEMPLATE_CHARS",
    "DIGITS_64_128_10",
    "MNIST_784_400_10",
    "SUPPORTED_VERSIONS",
    "Brick",
    "Template",
    "TemplateError",
    "parse_template",
    "template_to_text",
]

SUPPORTED_VERSIONS = (1,)
MAX_NEURONS_PER_BRICK = 1_000_000
MAX_PARAMETERS = 50_000_000  # 200 MB of float32 weights, before optimizer state
MAX_BRICKS = 1024
MAX_CONNECTION_DISTANCE = 64
MAX_TEMPLATE_CHARS = 1_000_000
DEFAULT_MAX_CONNECTION_DISTANCE = 1
TAB_WIDTH = 4
INDENT = "    "

# The seed template (Hanami's MNIST example with its settings): 784 -> 400 -> 10. Shared by the
# tests, the benchmarks and anything else that needs the reference network; canonical form, so
# `template_to_text(parse_template(MNIST_784_400_10)) == MNIST_784_400_10`.
MNIST_784_400_10 = """version: 1
settings:
    neuron_cooldown: 100000000000.0
    refractory_time: 1
    max_connection_distance: 1
    enable_reduction: false
bricks:
    1,1,1
        input: test_input
        number_of_neurons: 784
    2,1,1
        number_of_neurons: 400
    3,1,1
        output: test_output
        number_of_neurons: 10
"""

# scikit-learn's 8x8 digits: 64 -> 128 -> 10 (the demo datasets' network; tests and bench).
DIGITS_64_128_10 = """version: 1
settings:
    max_connection_distance: 1
bricks:
    1,1,1
        input: pixels
        number_of_neurons: 64
    2,1,1
        number_of_neurons: 128
    3,1,1
        output: digit
        number_of_neurons: 10
"""

# Digit counts are bounded so that int() never sees a huge literal (and never raises).
_INT_RE = re.compile(r"[+-]?\d{1,18}")
_COORD = r"([+-]?\d{1,9})"
_POSITION_RE = re.compile(rf"{_COORD}\s*,\s*{_COORD}\s*,\s*{_COORD}")
_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,255}")
_BRICK_KEYS = ("input", "output", "number_of_neurons")


class TemplateError(ValueError):
    """A template that cannot be used, with the 1-based line it was found on (None: whole text)."""

    def __init__(self, line: int | None, message: str) -> None:
        self.line = line
        self.message = message
        super().__init__(f"line {line}: {message}" if line is not None else message)


@dataclass(frozen=True)
class Brick:
    """One brick of a template: a group of neurons at a grid position.

    ``line`` is the template line of the position (for error messages); it is ignored by ``==``.
    """

    position: tuple[int, int, int]
    number_of_neurons: int
    input: str | None = None
    output: str | None = None
    line: int | None = field(default=None, compare=False, repr=False)

    @property
    def kind(self) -> str:
        """``"input"``, ``"output"`` or ``"hidden"``."""
        if self.input is not None:
            return "input"
        if self.output is not None:
            return "output"
        return "hidden"

    @property
    def name(self) -> str | None:
        """The input or output name of the brick; None for hidden bricks."""
        return self.input if self.input is not None else self.output

    @property
    def position_text(self) -> str:
        """The position as written in a template, e.g. ``"1,1,1"``."""
        return ",".join(str(v) for v in self.position)


@dataclass(frozen=True)
class Template:
    """A parsed, validated cluster template. Build one with :func:`parse_template`."""

    version: int
    settings: dict[str, float | int | bool]
    bricks: tuple[Brick, ...]

    @property
    def max_connection_distance(self) -> int:
        """The ``max_connection_distance`` setting, or its default (1)."""
        return int(self.settings.get("max_connection_distance", DEFAULT_MAX_CONNECTION_DISTANCE))

    @property
    def inputs(self) -> dict[str, int]:
        """Input brick name -> number of neurons, in template order."""
        return {b.input: b.number_of_neurons for b in self.bricks if b.input is not None}

    @property
    def outputs(self) -> dict[str, int]:
        """Output brick name -> number of neurons, in template order."""
        return {b.output: b.number_of_neurons for b in self.bricks if b.output is not None}

    @cached_property
    def edges(self) -> list[tuple[int, int]]:
        """All connections ``(src_index, dst_index)`` given by the grid rule (module docstring)."""
        return grid_edges(self.bricks, self.max_connection_distance)

    @cached_property
    def live_edges(self) -> list[tuple[int, int]]:
        """The edges on some input -> output path: the ones the torch network is built from."""
        forward = reachable(self.bricks, self.edges, sources(self.bricks), reverse=False)
        backward = reachable(self.bricks, self.edges, sinks(self.bricks), reverse=True)
        return [(s, d) for s, d in self.edges if s in forward and d in backward]

    def brick_index(self, name: str) -> int:
        """Index in ``bricks`` of the input or output brick called ``name`` (KeyError if none)."""
        for index, brick in enumerate(self.bricks):
            if brick.name == name:
                return index
        raise KeyError(name)

    def parameter_count(self) -> int:
        """Number of weights and biases of the network built from this template."""
        return parameter_count(self.bricks, self.live_edges)


def parse_template(text: str, *, max_parameters: int = MAX_PARAMETERS) -> Template:
    """Parse and validate template text; raise :class:`TemplateError` naming the line at fault."""
    if len(text) > MAX_TEMPLATE_CHARS:
        raise TemplateError(None, f"template is longer than {MAX_TEMPLATE_CHARS} characters")
    lines = _tokenize(text)
    if not lines:
        raise TemplateError(None, "template is empty: it must start with 'version: 1'")
    version = _parse_version(lines[0])

    settings: dict[str, float | int | bool] | None = None
    bricks: tuple[Brick, ...] | None = None
    bricks_line = 0
    i = 1
    while i < len(lines):
        header = lines[i]
        block_end = i + 1
        while block_end < len(lines) and lines[block_end].indent > 0:
            block_end += 1
        if header.indent != 0:
            raise TemplateError(
                header.number,
                "bad indentation: expected a top-level key ('settings:' or 'bricks:')",
            )
        key, value = _split_key_value(header)
        children = lines[i + 1 : block_end]
        if key == "version":
            raise TemplateError(header.number, "duplicate 'version'")
        if key not in ("settings", "bricks"):
            raise TemplateError(
                header.number, f"unknown top-level key '{key}' (expected 'settings' or 'bricks')"
            )
        if value:
            raise TemplateError(header.number, f"'{key}:' takes no value; put its entries below it")
        if key == "settings":
            if settings is not None:
                raise TemplateError(header.number, "duplicate 'settings' block")
            settings = _parse_settings(children)
        else:
            if bricks is not None:
                raise TemplateError(header.number, "duplicate 'bricks' block")
            if not children:
                raise TemplateError(header.number, "the 'bricks' block defines no bricks")
            bricks = _parse_bricks(children)
            bricks_line = header.number
        i = block_end

    if bricks is None:
        raise TemplateError(None, "missing 'bricks:' block")
    template = Template(version=version, settings=settings or {}, bricks=bricks)
    _validate_graph(template, bricks_line, max_parameters)
    return template


def template_to_text(template: Template) -> str:
    """Print a template in canonical form (4-space indents); ``parse_template`` reads it back."""
    out = [f"version: {template.version}"]
    if template.settings:
        out.append("settings:")
        for key, value in template.settings.items():
            out.append(f"{INDENT}{key}: {_format_setting(value)}")
    out.append("bricks:")
    for brick in template.bricks:
        out.append(f"{INDENT}{brick.position_text}")
        if brick.input is not None:
            out.append(f"{INDENT * 2}input: {brick.input}")
        if brick.output is not None:
            out.append(f"{INDENT * 2}output: {brick.output}")
        out.append(f"{INDENT * 2}number_of_neurons: {brick.number_of_neurons}")
    return "\n".join(out) + "\n"


# --- lexing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Line:
    number: int
    indent: int
    content: str


def _tokenize(text: str) -> list[_Line]:
    """Split into non-blank lines with their 1-based number, indentation width and content."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    result = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        content = line.lstrip(" \t")
        lead = line[: len(line) - len(content)]
        if content[0].isspace():
            raise TemplateError(number, "bad indentation: only spaces and tabs may indent a line")
        result.append(_Line(number, len(lead.expandtabs(TAB_WIDTH)), content))
    return result


def _shown(text: str, limit: int = 40) -> str:
    """Quote user text for an error message, shortened so that messages stay readable."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _split_key_value(line: _Line) -> tuple[str, str]:
    key, sep, value = line.content.partition(":")
    if not sep or not key.strip():
        raise TemplateError(line.number, f"expected 'key: value', got {_shown(line.content)}")
    return key.strip(), value.strip()


def _block_indent(children: list[_Line]) -> int:
    """The indentation shared by a block's direct children (that of its first line)."""
    return children[0].indent


# --- sections -----------------------------------------------------------------------------------


def _parse_version(line: _Line) -> int:
    if line.indent != 0 or ":" not in line.content:
        raise TemplateError(
            line.number, "missing version: the template must start with 'version: 1'"
        )
    key, value = _split_key_value(line)
    if key != "version":
        raise TemplateError(
            line.number, "missing version: the template must start with 'version: 1'"
        )
    if not _INT_RE.fullmatch(value):
        raise TemplateError(line.number, f"version must be an integer, got {_shown(value)}")
    version = int(value)
    if version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        raise TemplateError(line.number, f"unsupported version {version} (supported: {supported})")
    return version


def _parse_settings(children: list[_Line]) -> dict[str, float | int | bool]:
    settings: dict[str, float | int | bool] = {}
    if not children:
        return settings
    indent = _block_indent(children)
    for line in children:
        if line.indent != indent:
            raise TemplateError(
                line.number, f"bad indentation: settings entries must be indented {indent} spaces"
            )
        key, value = _split_key_value(line)
        if key not in _SETTINGS:
            known = ", ".join(_SETTINGS)
            raise TemplateError(line.number, f"unknown setting '{key}' (known: {known})")
        if key in settings:
            raise TemplateError(line.number, f"duplicate setting '{key}'")
        settings[key] = _SETTINGS[key](line.number, key, value)
    return settings


def _parse_bricks(children: list[_Line]) -> tuple[Brick, ...]:
    position_indent = _block_indent(children)
    groups: list[tuple[_Line, list[_Line]]] = []
    for line in children:
        if line.indent == position_indent:
            if _POSITION_RE.fullmatch(line.content) is None:
                raise TemplateError(
                    line.number, f"expected a brick position 'x,y,z', got {_shown(line.content)}"
                )
            groups.append((line, []))
        elif line.indent > position_indent:
            groups[-1][1].append(line)
        else:
            raise TemplateError(
                line.number,
                f"bad indentation: brick positions must be indented {position_indent} spaces",
            )
    if len(groups) > MAX_BRICKS:
        raise TemplateError(groups[MAX_BRICKS][0].number, f"more than {MAX_BRICKS} bricks")

    bricks: list[Brick] = []
    positions: dict[tuple[int, int, int], int] = {}
    names: dict[str, int] = {}
    for header, props in groups:
        brick, name_line = _parse_brick(header, props)
        if brick.position in positions:
            raise TemplateError(
                header.number,
                f"duplicate position {brick.position_text} (first used on line "
                f"{positions[brick.position]})",
            )
        positions[brick.position] = header.number
        if brick.name is not None:
            if brick.name in names:
                raise TemplateError(
                    name_line,
                    f"duplicate brick name '{brick.name}' (first used on line {names[brick.name]})",
                )
            names[brick.name] = name_line
        bricks.append(brick)
    return tuple(bricks)


def _parse_brick(header: _Line, props: list[_Line]) -> tuple[Brick, int]:
    """Parse one brick; also return the line of its input/output name (its header if none)."""
    match = _POSITION_RE.fullmatch(header.content)
    assert match is not None  # checked by the caller
    position = (int(match[1]), int(match[2]), int(match[3]))
    values: dict[str, str | int] = {}
    name_line = header.number
    if props:
        indent = _block_indent(props)
        for line in props:
            if line.indent != indent:
                raise TemplateError(
                    line.number,
                    f"bad indentation: properties of brick {header.content} must be indented "
                    f"{indent} spaces",
                )
            key, value = _split_key_value(line)
            if key not in _BRICK_KEYS:
                known = ", ".join(_BRICK_KEYS)
                raise TemplateError(line.number, f"unknown brick property '{key}' (known: {known})")
            if key in values:
                raise TemplateError(line.number, f"duplicate property '{key}'")
            if key == "number_of_neurons":
                values[key] = _parse_neurons(line.number, value)
            else:
                other = "output" if key == "input" else "input"
                if other in values:
                    raise TemplateError(
                        line.number, f"brick {header.content} cannot be both input and output"
                    )
                if not _NAME_RE.fullmatch(value):
                    raise TemplateError(
                        line.number,
                        f"{key} name must be 1-255 letters, digits, '_', '-' or '.', "
                        f"got {_shown(value)}",
                    )
                values[key] = value
                name_line = line.number
    if "number_of_neurons" not in values:
        raise TemplateError(header.number, f"brick {header.content} is missing number_of_neurons")
    brick = Brick(
        position=position,
        number_of_neurons=int(values["number_of_neurons"]),
        input=_optional_str(values.get("input")),
        output=_optional_str(values.get("output")),
        line=header.number,
    )
    return brick, name_line


def _optional_str(value: str | int | None) -> str | None:
    return None if value is None else str(value)


def _parse_neurons(number: int, value: str) -> int:
    if not _INT_RE.fullmatch(value) or int(value) <= 0:
        raise TemplateError(number, "number_of_neurons must be a positive integer")
    neurons = int(value)
    if neurons > MAX_NEURONS_PER_BRICK:
        raise TemplateError(
            number,
            f"number_of_neurons {neurons} exceeds the limit of {MAX_NEURONS_PER_BRICK} per brick",
        )
    return neurons


# --- settings values ----------------------------------------------------------------------------


def _setting_float(number: int, key: str, value: str) -> float:
    try:
        result = float(value)
    except ValueError:
        result = math.nan
    if not math.isfinite(result) or "_" in value:
        raise TemplateError(number, f"{key} must be a finite number, got {_shown(value)}")
    return result


def _setting_int_in(low: int, high: int) -> Callable[[int, str, str], int]:
    def parse(number: int, key: str, value: str) -> int:
        if not _INT_RE.fullmatch(value) or not low <= int(value) <= high:
            raise TemplateError(number, f"{key} must be an integer from {low} to {high}")
        return int(value)

    return parse


def _setting_bool(number: int, key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise TemplateError(number, f"{key} must be true or false, got {_shown(value)}")
    return lowered == "true"


_SETTINGS = {
    "neuron_cooldown": _setting_float,
    "refractory_time": _setting_int_in(0, 2**31 - 1),
    "max_connection_distance": _setting_int_in(0, MAX_CONNECTION_DISTANCE),
    "enable_reduction": _setting_bool,
}


def _format_setting(value: float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


# --- graph checks -------------------------------------------------------------------------------


def _validate_graph(template: Template, bricks_line: int, max_parameters: int) -> None:
    bricks = template.bricks
    if not any(b.input is not None for b in bricks):
        raise TemplateError(bricks_line, "the template has no input brick")
    if not any(b.output is not None for b in bricks):
        raise TemplateError(bricks_line, "the template has no output brick")
    forward = reachable(bricks, template.edges, sources(bricks), reverse=False)
    for index, brick in enumerate(bricks):
        if brick.output is not None and index not in forward:
            raise TemplateError(
                brick.line,
                f"output brick '{brick.output}' at {brick.position_text} is not reachable from any "
                f"input brick (a brick at x feeds bricks at x+1 within "
                f"max_connection_distance={template.max_connection_distance} in y and z)",
            )
    # Count parameters brick by brick (in x order) to name the brick that crosses the budget.
    total = 0
    incoming: dict[int, list[int]] = {}
    for src, dst in template.live_edges:
        incoming.setdefault(dst, []).append(src)
    for dst in sorted(incoming, key=lambda i: (bricks[i].position[0], i)):
        size = bricks[dst].number_of_neurons
        total += size + sum(bricks[s].number_of_neurons * size for s in incoming[dst])
        if total > max_parameters:
            raise TemplateError(
                bricks[dst].line,
                f"the network would have more than {max_parameters} parameters "
                f"(reached {total} at brick {bricks[dst].position_text})",
            )
