"""Parsing, validation and printing of Hanami cluster templates."""

from __future__ import annotations

import pytest

from ml.templates import (
    MAX_NEURONS_PER_BRICK,
    Brick,
    Template,
    TemplateError,
    parse_template,
    template_to_text,
)
from tests.ml.samples import SEED_TEMPLATE

# The exact string of the Hanami SDK example (no settings, no trailing newline).
SDK_TEMPLATE = (
    "version: 1\n"
    "bricks:\n"
    "    1,1,1\n"
    "        input: test_input\n"
    "        number_of_neurons: 784\n"
    "    2,1,1\n"
    "        number_of_neurons: 400\n"
    "    3,1,1\n"
    "        output: test_output\n"
    "        number_of_neurons: 10"
)


def test_seed_template_becomes_784_400_10() -> None:
    template = parse_template(SEED_TEMPLATE)
    assert template.version == 1
    assert template.settings == {
        "neuron_cooldown": 100000000000.0,
        "refractory_time": 1,
        "max_connection_distance": 1,
        "enable_reduction": False,
    }
    assert [b.number_of_neurons for b in template.bricks] == [784, 400, 10]
    assert [b.kind for b in template.bricks] == ["input", "hidden", "output"]
    assert template.inputs == {"test_input": 784}
    assert template.outputs == {"test_output": 10}
    assert template.edges == [(0, 1), (1, 2)]
    assert template.live_edges == [(0, 1), (1, 2)]
    assert template.parameter_count() == 784 * 400 + 400 + 400 * 10 + 10


def test_sdk_template_without_settings() -> None:
    template = parse_template(SDK_TEMPLATE)
    assert template.settings == {}
    assert template.max_connection_distance == 1
    assert template.bricks[0] == Brick((1, 1, 1), 784, input="test_input")


def test_crlf_tabs_comments_and_blank_lines() -> None:
    text = SDK_TEMPLATE.replace("        ", "\t\t").replace("    ", "\t")
    text = "# a cluster\r\n" + text.replace("\n", "  # note\r\n\r\n")
    assert parse_template(text) == parse_template(SDK_TEMPLATE)


def test_other_indentation_widths() -> None:
    text = (
        SDK_TEMPLATE.replace("        ", "      ").replace("    1", "  1").replace("    2", "  2")
    )
    text = text.replace("    3", "  3")
    assert parse_template(text) == parse_template(SDK_TEMPLATE)


@pytest.mark.parametrize("text", [SEED_TEMPLATE, SDK_TEMPLATE])
def test_round_trip(text: str) -> None:
    template = parse_template(text)
    printed = template_to_text(template)
    assert parse_template(printed) == template
    assert template_to_text(parse_template(printed)) == printed


def test_seed_template_prints_as_written() -> None:
    assert template_to_text(parse_template(SEED_TEMPLATE)) == SEED_TEMPLATE


def test_fan_in_and_fan_out_with_connection_distance() -> None:
    text = """version: 1
settings:
    max_connection_distance: 1
bricks:
    1,1,1
        input: a
        number_of_neurons: 4
    1,5,1
        input: b
        number_of_neurons: 3
    2,1,1
        number_of_neurons: 8
    2,2,1
        number_of_neurons: 6
    2,5,1
        number_of_neurons: 5
    3,2,1
        output: y
        number_of_neurons: 2
    3,5,1
        output: z
        number_of_neurons: 1
"""
    template = parse_template(text)
    # a feeds the two hidden bricks within |dy| <= 1; b only the one at y=5; hidden bricks at
    # y=1,2 feed y (y=2), the one at y=5 feeds z.
    assert template.edges == [(0, 2), (0, 3), (1, 4), (2, 5), (3, 5), (4, 6)]
    assert template.inputs == {"a": 4, "b": 3}
    assert template.outputs == {"y": 2, "z": 1}


def test_dead_bricks_are_not_live() -> None:
    text = """version: 1
bricks:
    1,1,1
        input: x
        number_of_neurons: 4
    2,1,1
        number_of_neurons: 8
    2,9,9
        number_of_neurons: 8
    3,1,1
        output: y
        number_of_neurons: 2
    3,9,9
        number_of_neurons: 3
"""
    template = parse_template(text)
    assert template.edges == [(0, 1), (1, 3), (2, 4)]
    assert template.live_edges == [(0, 1), (1, 3)]


BASE = SDK_TEMPLATE + "\n"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("", None, "empty"),
        ("bricks:\n    1,1,1\n", 1, "missing version"),
        ("\n\n  version: 1\n", 3, "missing version"),
        ("version: 2\nbricks:\n", 1, "unsupported version 2"),
        ("version: one\n", 1, "version must be an integer"),
        ("version: 1\n", None, "missing 'bricks:' block"),
        ("version: 1\nversion: 1\n", 2, "duplicate 'version'"),
        ("version: 1\nbricks:\n", 2, "defines no bricks"),
        ("version: 1\nlayers:\n", 2, "unknown top-level key 'layers'"),
        ("version: 1\n    bricks:\n", 2, "bad indentation"),
        ("version: 1\nsettings:\n    colour: red\n" + BASE[11:], 3, "unknown setting 'colour'"),
        ("version: 1\nsettings:\n    refractory_time: -1\n" + BASE[11:], 3, "refractory_time"),
        ("version: 1\nsettings:\n    enable_reduction: maybe\n" + BASE[11:], 3, "true or false"),
        ("version: 1\nsettings:\n    neuron_cooldown: inf\n" + BASE[11:], 3, "finite number"),
        (
            "version: 1\nsettings:\n    refractory_time: 1\n      enable_reduction: true\n",
            4,
            "bad indentation",
        ),
        (
            "version: 1\nsettings:\n    refractory_time: 1\n    refractory_time: 2\n",
            4,
            "duplicate setting",
        ),
        ("version: 1\nsettings: yes\n", 2, "takes no value"),
        (BASE.replace("    2,1,1", "    2;1;1"), 6, "expected a brick position"),
        (BASE.replace("    2,1,1", "  2,1,1"), 6, "bad indentation"),
        (
            BASE.replace("        number_of_neurons: 784", "          number_of_neurons: 784"),
            5,
            "bad",
        ),
        (
            BASE.replace("        input: test_input\n", "        input: test_input\n      x: 1\n"),
            5,
            "bad",
        ),
        (
            BASE.replace("    3,1,1", "    2,1,1"),
            8,
            "duplicate position 2,1,1 (first used on line 6)",
        ),
        (BASE.replace("output: test_output", "output: test_input"), 9, "duplicate brick name"),
        (
            BASE.replace("        input: test_input\n", "        input: a\n        output: b\n"),
            5,
            "cannot be both input and output",
        ),
        (BASE.replace("        number_of_neurons: 400\n", ""), 6, "missing number_of_neurons"),
        (BASE.replace("number_of_neurons: 400", "number_of_neurons: 0"), 7, "positive integer"),
        (BASE.replace("number_of_neurons: 400", "number_of_neurons: -5"), 7, "positive integer"),
        (BASE.replace("number_of_neurons: 400", "number_of_neurons: 4.5"), 7, "positive integer"),
        (
            BASE.replace(
                "number_of_neurons: 400", f"number_of_neurons: {MAX_NEURONS_PER_BRICK + 1}"
            ),
            7,
            "exceeds the limit",
        ),
        (BASE.replace("number_of_neurons: 400", "number_of_neurons: " + "9" * 5000), 7, "positive"),
        (BASE.replace("    2,1,1", "    2,1," + "1" * 5000), 6, "expected a brick position"),
        (BASE.replace("number_of_neurons: 400", "neurons: 400"), 7, "unknown brick property"),
        (
            BASE.replace(
                "number_of_neurons: 400", "number_of_neurons: 400\n        number_of_neurons: 3"
            ),
            8,
            "duplicate property",
        ),
        (BASE.replace("input: test_input", "input: bad name"), 4, "input name must be"),
        (BASE.replace("        input: test_input\n", ""), 2, "no input brick"),
        (BASE.replace("        output: test_output\n", ""), 2, "no output brick"),
        (BASE.replace("    3,1,1", "    3,4,1"), 8, "output brick 'test_output' at 3,4,1 is not"),
        (BASE.replace("    2,1,1", "    5,1,1"), 8, "not reachable"),
    ],
)
def test_errors_name_the_line(text: str, line: int | None, fragment: str) -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template(text)
    assert caught.value.line == line, str(caught.value)
    assert fragment in caught.value.message
    if line is not None:
        assert str(caught.value) == f"line {line}: {caught.value.message}"


def test_error_message_format() -> None:
    text = BASE.replace("number_of_neurons: 400", "number_of_neurons: many")
    with pytest.raises(
        TemplateError, match=r"^line 7: number_of_neurons must be a positive integer$"
    ):
        parse_template(text)


def test_parameter_budget_blocks_hostile_templates() -> None:
    text = (
        "version: 1\nbricks:\n"
        "    1,1,1\n        input: x\n        number_of_neurons: 1000000\n"
        "    2,1,1\n        number_of_neurons: 1000000\n"
        "    3,1,1\n        output: y\n        number_of_neurons: 10\n"
    )
    with pytest.raises(TemplateError) as caught:
        parse_template(text)
    assert caught.value.line == 6
    assert "parameters" in caught.value.message
    with pytest.raises(TemplateError, match="more than 1000 parameters"):
        parse_template(SDK_TEMPLATE, max_parameters=1000)


def test_template_is_frozen_and_comparable() -> None:
    template = parse_template(SDK_TEMPLATE)
    assert isinstance(template, Template)
    with pytest.raises(AttributeError):
        template.version = 2  # type: ignore[misc]
    assert template == parse_template(template_to_text(template))
    assert template.brick_index("test_output") == 2
