"""inspect_templates analyses a template through its shape (words renamed to placeholders,
parsed once per shape): what it reports must be what analysing the source itself reports."""

from __future__ import annotations

import pytest

from libs.common import expressions
from libs.common.expressions import inspect_templates

# (source, bare); each also checked after a sibling of the same shape filled the cache
TEMPLATES: list[tuple[str, bool]] = [
    ("Summarize {{ n5.text }} for {{ inputs.topic }}", False),
    ("{{ a.b[0].c }} and {{ a.d }} and {{ b }}", False),
    ("{{ fetch.body | default(0) > 3 }}", False),
    ("fetch.status == 200 and fetch.ok", True),
    ("n1.value * 2 + n2.value", True),
    ("{{ x | default(1, boolean=true) }}", False),
    ("{{ x is defined and y is not none }}", False),
    ("{{ range(3) | list }}{{ loop }}", False),
    ("{{ default.x | default(default.y) }}", False),  # a node named like a filter
    ("{{ hx1.a }}{{ hx0.b }}{{ hx1.c }}", False),  # names that look like placeholders
    ("{{ 1e5 + n3.v }} {{ 0x1F }}", False),
    ("{{ a.__class__ }}", False),  # private attribute: an error, located in the source
    ("{{ a | nosuchfilter }}", False),  # unknown filter: an error
    ("{{ a is nosuchtest }}", False),
    ("{{ a. }}", False),  # syntax error
    ("{{ a['key'].b }}", False),  # a string literal: analysed as itself
    ("{% for i in items %}{{ i }}{% endfor %}", False),  # a statement: as itself
    ("{{ a.b if c else d.e }}", False),
    ("not (a.x in b.y)", True),
    ("{{ _private.x }}{{ n_1.y_2 }}", False),
    ("{{ a }}\r\n{{ b }}", False),
    ("{{ secrets.KEY }} {{ system.execution_id }} {{ item.x }} {{ index }}", False),
]


def _renamed(source: str) -> str:
    # the same shape with other ids: every word the test uses as a node id, swapped
    for old, new in (("n5", "m7"), ("fetch", "get1"), ("a", "q"), ("x", "w"), ("n1", "k9")):
        source = source.replace(f"{{{{ {old}", f"{{{{ {new}").replace(f" {old}.", f" {new}.")
    return source


@pytest.mark.parametrize(("source", "bare"), TEMPLATES)
def test_shape_analysis_agrees_with_the_source_analysis(source: str, bare: bool) -> None:
    expressions.clear_caches()
    sibling = _renamed(source)
    for text in (sibling, source, sibling):
        direct = expressions._analyze(text, bare or not expressions.is_templated(text)).info
        assert inspect_templates(text, expression=bare) == direct, text


def test_a_shape_cache_hit_maps_back_to_each_templates_own_names() -> None:
    expressions.clear_caches()
    # a filter keeps these off the dotted-names fast path: the shape cache answers them
    first = inspect_templates("{{ n1.text | upper }} / {{ n2.text }} / {{ n1.size }}")
    second = inspect_templates("{{ q9.text | upper }} / {{ zz.text }} / {{ q9.size }}")
    assert first.names == {"n1", "n2"}
    assert second.names == {"q9", "zz"}
    assert second.paths == {("q9", "text"), ("zz", "text"), ("q9", "size")}
    assert len(expressions._SHAPES) == 1  # one shape, parsed once


# (source, bare): the dotted-names fast path either declines (None) or agrees with the parser
DOTTED_CASES: list[tuple[str, bool]] = [
    ("Summarize {{ n5.text }} for {{ inputs.topic }}", False),
    ("{{ a }}", False),
    ("  {{\ta.b.c\n}}  ", False),
    ("{{ a.b }}{{ a.c }}{{ a.b }}", False),
    ("text only with }} and a lone brace }", False),
    ("n1.value", True),
    ("  n1.value.deep  ", True),
    ("{{ _private.x }}{{ n_1.y_2 }}", False),
    ("{{ a.if }} {{ b.none }}", False),  # keywords as attributes are attributes
    # declined: each must come back None or equal to the parser's facts
    ("{{ a._x }}", False),
    ("{{ a.__class__ }}", False),
    ("{{ range.x }}", False),
    ("{{ loop.index }}", False),
    ("{{ true }}", False),
    ("{{ none.x }}", True),
    ("{{{ a }}", False),
    ("{{ a }} {", False),
    ("{{ a }} {{ b", False),
    ("{{ a. }}", False),
    ("{{ a.b[0] }}", False),
    ("{{- a -}}", False),
    ("{{ a | upper }}", False),
    ("{% if a %}{{ b }}{% endif %}", False),
    ("{# c #}{{ a }}", False),
    ("{{ a }}\r\n{{ b }}", False),
    ("a.b c", True),
    ("a + b", True),
    ("", True),
    ("{ not a block }", False),
]


@pytest.mark.parametrize(("source", "bare"), DOTTED_CASES)
def test_the_dotted_fast_path_agrees_with_the_parser(source: str, bare: bool) -> None:
    fast = expressions._dotted_info(source, bare)
    parsed = expressions._parsed_analysis(source, bare).info
    if fast is not None:
        assert parsed.errors == ()
        assert fast == parsed
    # and the public entry point says what the parser says, whichever path it took
    expressions.clear_caches()
    assert expressions._template_info(source, bare) == parsed


def test_the_dotted_fast_path_takes_the_common_templates() -> None:
    # not a fallback that never fires: the bench's templates go through it
    info = expressions._dotted_info("Summarize {{ n5.text }} for {{ inputs.topic }}", False)
    assert info is not None
    assert info.paths == {("n5", "text"), ("inputs", "topic")}
    assert expressions._dotted_info("{{ a.b[0] }}", False) is None


@pytest.mark.parametrize("bare", [False, True])
def test_the_whole_list_dotted_reading_agrees_with_the_one_by_one(bare: bool) -> None:
    # all the cases at once (the fallback to one by one), then only those of the kind (the
    # one pass over the joined text)
    cases = [source for source, _ in DOTTED_CASES]
    taken = [source for source in cases if expressions._dotted_info(source, bare) is not None]
    for sources in (cases, taken, list(reversed(taken)), []):
        dotted, owners, roots, rests = expressions.dotted_paths(sources, bare)
        for i, source in enumerate(sources):
            info = expressions._dotted_info(source, bare)
            paths = _read_paths(i, owners, roots, rests)
            if bare and dotted[i] and info is None:  # paths and numbers with operators
                _assert_as_parsed(source, paths)
                continue
            assert dotted[i] == (info is not None), source
            assert paths == (info.paths if info is not None else set()), source
    assert len(taken) >= 2


def _read_paths(
    i: int, owners: list[int], roots: list[str], rests: list[str]
) -> set[tuple[str, ...]]:
    return {
        (root, *rest.split(".")[1:])
        for owner, root, rest in zip(owners, roots, rests, strict=True)
        if owner == i
    }


def _assert_as_parsed(source: str, paths: set[tuple[str, ...]]) -> None:
    parsed = expressions._parsed_analysis(source, True).info
    assert parsed.errors == (), source
    assert paths == parsed.paths, source
    assert {path[0] for path in paths} == parsed.names, source


ARITHMETIC_CASES = [
    ("n1.value * 2", True),
    ("a.b*2", True),
    ("a.b // c - 0.5", True),
    ("a.b <= c.d != 3", True),
    (" a.b\n% 2 ", True),
    ("a + a.b > 10", True),
    ("2 * 3", True),
    ("a ** 2", False),
    ("a.b * -2", False),
    ("true * 2", False),
    ("loop.index % 2", False),
    ("range * 2", False),
    ("a.__class__ * 2", False),
    ("a._x + 1", False),
    ("007 * a", False),
    ("a.0 + 1", False),
    ("a.b * 2.", False),
    ("a.b = 2", False),
    ("a.b * 2e5", False),
    ("a.b ~ c", False),
    ("a.b\r\n+ 1", False),
    ("a and b", False),
    ("a.b(1) + 2", False),
]


def test_the_whole_list_bare_reading_takes_arithmetic_as_the_parser_reads_it() -> None:
    sources = [source for source, _ in ARITHMETIC_CASES]
    dotted, owners, roots, rests = expressions.dotted_paths(sources, True)
    assert dotted == [taken for _, taken in ARITHMETIC_CASES]
    for i, source in enumerate(sources):
        if dotted[i]:
            _assert_as_parsed(source, _read_paths(i, owners, roots, rests))
        else:
            assert i not in owners, source
