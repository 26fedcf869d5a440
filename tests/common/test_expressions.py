from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.common.expressions import (
    ExpressionError,
    Limits,
    check,
    evaluate,
    inspect_templates,
    reference_paths,
    references,
    render,
)

CTX: dict[str, Any] = {
    "inputs": {"url": "http://x", "n": 3},
    "fetch": {"body": "hello", "items": [1, 2, 3], "status": 200, "none": None, "ok": True},
    "merge": {"items": ["a", "b"], "values": {"k": 1}},
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain", "plain"),
        ("{{ inputs.n }}", 3),
        ("  {{ inputs.n }}\n", 3),
        ("{{ fetch.items }}", [1, 2, 3]),
        ("{{ fetch.items[1] }}", 2),
        ("{{ fetch['body'] }}", "hello"),
        ("{{ fetch.status == 200 and inputs.n > 1 }}", True),
        ("{{ missing }}", None),
        ("{{ missing.deep.path }}", None),
        ("{{ fetch.none.x }}", None),
        ("{{ {'a': missing, 'b': [missing]} }}", {"a": None, "b": [None]}),
        ("{{ fetch.items | map('string') }}", ["1", "2", "3"]),
        (
            "{{ fetch | tojson }}",
            '{"body": "hello", "items": [1, 2, 3], "status": 200, "none": null, "ok": true}',
        ),
        ("{{ '{\"a\": [1]}' | fromjson }}", {"a": [1]}),
        ("{{ merge.items }}", ["a", "b"]),  # the key wins over dict.items
        ("{{ merge.values.k }}", 1),
        ("n={{ inputs.n }}!", "n=3!"),
        ("a{{ missing.x }}b{{ fetch.none }}c", "abc"),
        ("{{ fetch.ok }}/{{ fetch.items }}", "true/[1, 2, 3]"),
        ("{% for i in fetch.items %}{{ i }},{% endfor %}", "1,2,3,"),
        ("{{ fetch.body ~ '!' }}", "hello!"),
        ("keeps\ntrailing newline\n", "keeps\ntrailing newline\n"),
        ("{{ 2 ** 10 }}", 1024),
        ("{{ 'ab' * 2 }}", "abab"),
    ],
)
def test_render(template: str, expected: Any) -> None:
    assert render(template, CTX) == expected


def test_render_walks_containers_and_keeps_scalars() -> None:
    value = {"a": ["{{ inputs.n }}", {"b": "x {{ fetch.body }}"}], "c": 5, "d": None, "e": True}
    assert render(value, CTX) == {"a": [3, {"b": "x hello"}], "c": 5, "d": None, "e": True}


def test_plain_values_are_returned_as_they_are() -> None:
    value = {"a": ["x", 1]}
    assert render(value, CTX) is value
    big = "x" * 100_000
    assert render(big, CTX) is big


def test_native_values_keep_identity() -> None:
    assert render("{{ fetch.items }}", CTX) is CTX["fetch"]["items"]


def test_evaluate() -> None:
    assert evaluate("fetch.status == 200", CTX) is True
    assert evaluate("{{ inputs.n * 2 }}", CTX) == 6
    assert evaluate("inputs.n", CTX) == 3
    assert evaluate("missing", CTX) is None
    with pytest.raises(ExpressionError, match="empty"):
        evaluate("  ", CTX)
    with pytest.raises(ExpressionError, match="syntax"):
        evaluate("a }} b", CTX)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ 2 ** 100000 }}", "power larger"),
        ("{{ 9 ** 9 ** 9 ** 9 ** 9 }}", "power larger"),
        ("{{ 'a' * 10 ** 9 }}", "repetition"),
        ("{{ [1] * 10 ** 9 }}", "repetition"),
        ("{{ fetch.__class__ }}", "private attribute"),
        ("{{ ''.__class__.__mro__ }}", "private attribute"),
        ("{{ fetch['__class__'] }}", "not allowed"),
        ("{{ fetch.items.append(4) }}", "not allowed"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ missing + 1 }}", "undefined"),
        ("{{ foo( }}", "syntax error"),
        ("{% import 'x' as y %}", "not allowed"),
        ("{% include 'x' %}", "not allowed"),
        ("{{ x | nosuchfilter }}", "unknown filter"),
        ("{{ 'a' | center(1000000000) }}", "size limit"),
        ("{{ 'x'.ljust(100000000) }}", "size limit"),
        ("{{ '%0999999999d' % 1 }}", "format width"),
        ("{{ '{:>999999999}'.format(1) }}", "format width"),
        ("{{ 'ab' | replace('', 'x' * 500000) }}", "replace"),
        (
            "{% set ns = namespace(x='ab') %}{% for i in range(60) %}"
            "{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
            "concatenation",
        ),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursion"),
        ("{{ fetch.body.upper }}", "function"),
        ("{{ range(10 ** 6) }}", "Range too big"),
    ],
)
def test_sandbox_violations_raise(template: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        render(template, CTX)
    assert message in str(info.value)
    assert info.value.expression == template


def test_runaway_loops_stop_at_the_deadline() -> None:
    limits = Limits(max_seconds=0.2)
    for template in (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% set r = range(100000) | list %}{% for a in r %}{% for b in r %}{% endfor %}"
        "{% endfor %}",
    ):
        started = time.monotonic()
        with pytest.raises(ExpressionError, match=r"exceeded 0\.2 s"):
            render(template, CTX, limits)
        assert time.monotonic() - started < 1.0


def test_output_size_is_bounded() -> None:
    limits = Limits(max_output_chars=1000)
    with pytest.raises(ExpressionError, match="longer than 1000"):
        render("{% for i in range(2000) %}x{% endfor %}", CTX, limits)
    with pytest.raises(ExpressionError, match="longer than 1000"):
        render("{{ big }}!", {"big": "y" * 2000}, limits)


def test_references_and_paths() -> None:
    value = {
        "a": "{{ inputs.url }} {{ fetch.body[0].x }}",
        "b": ["{% for x in src.items %}{{ x.y }}{{ loop.index }}{% endfor %}"],
        "c": "{{ system.execution_id }} {{ range(3) | list }}",
        "d": "{% set local = fetch.status %}{{ local }}",
        "e": "no template",
    }
    assert references(value) == {"inputs", "fetch", "src", "system"}
    assert reference_paths(value) >= {
        ("inputs", "url"),
        ("fetch", "body", "0", "x"),
        ("src", "items"),
        ("system", "execution_id"),
        ("fetch", "status"),
    }
    assert reference_paths("{{ a[b.c].d }}") == {("a",), ("b", "c")}
    assert references("fetch.status == 200", expression=True) == {"fetch"}
    assert references("fetch.status == 200") == set()  # not an expression field: plain text


def test_check() -> None:
    assert check({"a": "{{ x.y }}", "b": "fine", "c": 3}) == []
    problems = check(["{{ foo( }}", "{{ a.__class__ }}", "{{ x | nosuch }}"])
    assert len(problems) == 3
    assert "'{{ foo( }}'" in problems[0]
    assert "__class__" in problems[1]
    assert "nosuch" in problems[2]
    assert check("a }} b", expression=True)
    info = inspect_templates({"x": "{{ a.b }}", "y": "{{ c( }}"})
    assert info.names == {"a"} and len(info.errors) == 1


# ---- the Jinja-free fast path renders exactly what Jinja renders -----------------------

LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=5)
)
JSON = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "items", "keys", "0"]), inner, max_size=3)
    ),
    max_leaves=8,
)
PATHS = st.lists(
    st.sampled_from([".a", ".b", ".items", ".keys", "[0]", "[1]", "[2]"]), max_size=3
).map(lambda parts: "".join(parts))


@settings(deadline=None, max_examples=300)
@given(
    context=st.dictionaries(st.sampled_from(["x", "y"]), JSON, max_size=2),
    root=st.sampled_from(["x", "y", "z"]),
    path=PATHS,
    text=st.sampled_from(["", "pre ", " "]),
)
def test_fast_path_matches_jinja(context: dict[str, Any], root: str, path: str, text: str) -> None:
    fast_source = f"{text}{{{{ {root}{path} }}}}"
    slow_source = f"{text}{{{{ ({root}{path}) }}}}"  # parentheses: not a "simple" path
    results = []
    for source in (fast_source, slow_source):
        try:
            results.append(("ok", render(source, context)))
        except ExpressionError as exc:
            results.append(("error", exc.message))
    assert results[0] == results[1]
