"""The fast JSON frame decoder answers exactly what json.loads answers (value, types, refusals)."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.core import jsonframes

EDGE_FRAMES = [
    '{"type": "request", "inputs": {"x": [[0.1, 2, -3e-5, 1E10]]}}',
    "NaN",
    '{"x": [NaN, Infinity, -Infinity]}',
    "1e400",
    "-0",
    "-0.0",
    "123456789012345678901234567890",
    "-9223372036854775809",
    "18446744073709551616",
    '"\\ud800"',
    '"\\udc00\\ud800"',
    '{"a": 1, "a": 2}',
    "[" * 1100 + "]" * 1100,
    "[" * 100000 + "]" * 100000,
    "01",
    "1.",
    "-",
    ".5",
    '"a\x01b"',
    "\ufeff{}",
    "",
    " ",
    "{} x",
    "[1,]",
    "{'a': 1}",
    '"\\u00e9\\n\\t"',
    '"é😀"',
    "true",
    "null",
    "4.9e-324",
    "2.2250738585072014e-308",
    "0.30000000000000004",
    "1.7976931348623157e308",
]


def _outcome(decode, text):
    try:
        return ("value", decode(text))
    except RecursionError:
        return ("refused", "RecursionError")
    except ValueError:
        return ("refused", "ValueError")


def _same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


def _check(text):
    fast, slow = _outcome(jsonframes.loads, text), _outcome(json.loads, text)
    assert fast[0] == slow[0], (text[:80], fast, slow)
    if fast[0] == "value":
        assert _same(fast[1], slow[1]), text[:80]
    else:
        assert fast[1] == slow[1], text[:80]


@pytest.mark.parametrize("text", EDGE_FRAMES, ids=range(len(EDGE_FRAMES)))
def test_edge_frames_decode_as_json_loads_decodes_them(text):
    _check(text)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_serialised_value_decodes_as_json_loads_decodes_it(value):
    _check(json.dumps(value))
    _check(json.dumps(value, ensure_ascii=False))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='{}[]",:0123456789.eE+-tfnrulsaN \\u\t\n', max_size=40))
def test_arbitrary_text_decodes_or_is_refused_as_json_loads_does(text):
    _check(text)


def test_a_plain_frame_does_not_go_through_json_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("json.loads used for a plain RFC 8259 frame")

    monkeypatch.setattr(jsonframes.json, "loads", refuse)
    assert jsonframes.loads('{"type": "request", "inputs": {"x": [[1.5, 2]]}}') == {
        "type": "request",
        "inputs": {"x": [[1.5, 2]]},
    }


@pytest.mark.parametrize(
    "text",
    [
        "1" * 19,
        "[" + "9" * 19 + "]",
        '{"id": ' + "1" * 25 + "}",
        "-" + "9" * 19,
        "1e" + "0" * 25 + "5",
    ],
)
def test_long_digit_runs_keep_json_loads_reading(text):
    _check(text)
    assert jsonframes._has_long_digit_run(text)


@pytest.mark.parametrize("text", ["1" * 18, "[" + "9" * 18 + "]", "[1.5, 2]", ""])
def test_short_digit_runs_take_the_fast_path(text):
    assert not jsonframes._has_long_digit_run(text)


@pytest.mark.parametrize(
    "text",
    ["[0.0012345678901234567, 1]", "0." + "1" * 30, "[0.00" + "7" * 17 + "]"],
)
def test_long_fractions_take_the_fast_path(text):
    _check(text)
    assert not jsonframes._has_long_digit_run(text)
