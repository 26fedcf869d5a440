"""Sandboxed templates and expressions for workflow definitions.

Strings in node params, ``when`` gates, ``default_output`` and the workflow's ``outputs`` may
hold Jinja2 templates (``"Summarize: {{ fetch.body }}"``). Condition-like params and ``when``
may also be bare expressions (``"fetch.status == 200"``).

Rules that callers rely on:

- A string without ``{{``/``{%``/``{#`` is returned unchanged, without touching Jinja.
- A string that is exactly one ``{{ expr }}`` (whitespace around allowed) renders to the
  *native* value of ``expr`` (int, list, dict, bool, None, ...); anything else renders to a
  string. Dicts and lists are rendered recursively; other scalars pass through.
- Undefined names and attributes are lenient: ``None`` natively, ``""`` in strings, and
  ``{{ x.y.z }}`` on an undefined ``x`` does not raise. Arithmetic or comparison on an
  undefined value does raise (``'x' is undefined``).
- ``a.b`` prefers the key ``b`` of a dict over the dict's attributes, so an output field
  called ``items`` or ``values`` is reachable as ``node.items``.
- In strings, ``None`` renders as ``""``, booleans as ``true``/``false`` and dicts/lists as
  JSON, because templates here build prompts, URLs and request bodies, not Python reprs.
- Evaluation runs in a sandbox (no private attributes, no imports, no mutation of lists or
  dicts) with bounded time and size: ``Limits``. Every failure, syntax and runtime alike, is
  raised as ``ExpressionError``.
"""

from __future__ import annotations

import json
import re
import time
import types
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache, update_wrapper
from itertools import chain, compress, repeat
from operator import and_, eq, floordiv, is_not, itemgetter, mul, truth
from typing import Any, Final

from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.parser import Parser
from jinja2.runtime import ChainableUndefined, Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

__all__ = [
    "DEFAULT_LIMITS",
    "ExpressionError",
    "Limits",
    "TemplateInfo",
    "check",
    "clear_caches",
    "dotted_paths",
    "evaluate",
    "inspect_templates",
    "is_templated",
    "reference_paths",
    "references",
    "render",
]


class ExpressionError(Exception):
    """A template or expression that does not parse, is unsafe, or fails when evaluated."""

    def __init__(self, message: str, expression: str = "") -> None:
        self.message = message
        self.expression = expression
        super().__init__(message, expression)

    def __str__(self) -> str:
        if not self.expression:
            return self.message
        shown = self.expression if len(self.expression) <= 120 else self.expression[:117] + "..."
        return f"{self.message} (in {shown!r})"


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource bounds for one ``render``/``evaluate`` call."""

    #: Wall-clock budget for the whole call (all strings of a nested value together).
    max_seconds: float = 1.0
    #: Longest string a template, operator or filter may produce.
    max_output_chars: int = 1_000_000
    #: Longest list or tuple an operator or filter may produce.
    max_items: int = 1_000_000
    #: Largest integer (in bits) that ``*`` and ``**`` may produce.
    max_int_bits: int = 8192


DEFAULT_LIMITS: Final = Limits()

_MARKERS: Final = ("{{", "{%", "{#")
_RESULT_NAME: Final = "_heddle_result"
# Jinja keywords that the lexer reports as names but the parser treats as syntax or
# constants: a "simple path" must not start with one of them.
_JINJA_WORDS: Final = frozenset(
    {"and", "or", "not", "in", "is", "if", "else", "elif"}
    | {"true", "false", "none", "True", "False", "None"}
)
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_PATH = rf"{_IDENT}(?:\.{_IDENT}|\[[0-9]+\])*"
_SIMPLE_BLOCK: Final = re.compile(r"\{\{[ \t\n]*(" + _PATH + r")[ \t\n]*\}\}")
_SIMPLE_BARE: Final = re.compile(r"[ \t\n]*(" + _PATH + r")[ \t\n]*")
_PATH_PART: Final = re.compile(r"\.(" + _IDENT + r")|\[([0-9]+)\]")
_PERCENT_SPEC: Final = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|[0-9]+)?(?:\.(\*|[0-9]+))?")
_DIGITS: Final = re.compile(r"[0-9]+")
_PADDING_METHODS: Final = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs"})


def is_templated(value: str) -> bool:
    """Whether a string contains template syntax at all (cheap; no parsing)."""
    return "{" in value and any(marker in value for marker in _MARKERS)


# --------------------------------------------------------------------------------------
# Budget: the active limits and deadline of the current render call.


@dataclass(slots=True)
class _Budget:
    limits: Limits
    deadline: float
    expression: str = ""

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise ExpressionError(
                f"evaluation exceeded {self.limits.max_seconds} s", self.expression
            )


_BUDGET: ContextVar[_Budget | None] = ContextVar("heddle_expression_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:  # called outside render(): e.g. a filter used directly
        budget = _Budget(DEFAULT_LIMITS, time.monotonic() + DEFAULT_LIMITS.max_seconds)
    return budget


def _check_size(value: Any) -> Any:
    limits = _budget().limits
    if isinstance(value, str):
        if len(value) > limits.max_output_chars:
            raise ExpressionError(f"result longer than {limits.max_output_chars} characters")
    elif isinstance(value, list | tuple) and len(value) > limits.max_items:
        raise ExpressionError(f"result longer than {limits.max_items} items")
    return value


def _check_repeat(seq: Any, count: Any) -> None:
    if isinstance(count, int) and isinstance(seq, str | list | tuple):
        limits = _budget().limits
        cap = limits.max_output_chars if isinstance(seq, str) else limits.max_items
        if len(seq) * max(count, 0) > cap:
            raise ExpressionError(f"repetition would exceed {cap} elements")


def _check_percent_format(fmt: str) -> None:
    cap = _budget().limits.max_output_chars
    for match in _PERCENT_SPEC.finditer(fmt):
        for part in match.groups():
            if part == "*":
                raise ExpressionError("'*' widths are not allowed in % formatting")
            if part is not None and (len(part) > 9 or int(part) > cap):
                raise ExpressionError(f"format width above {cap}")


def _check_width_args(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    cap = _budget().limits.max_output_chars
    for arg in (*args, *kwargs.values()):
        if isinstance(arg, int) and not isinstance(arg, bool) and arg > cap:
            raise ExpressionError(f"argument {arg} is above the size limit {cap}")


def _check_replace(text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return
    hits = len(text) + 1 if old == "" else text.count(old)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    cap = _budget().limits.max_output_chars
    if len(text) + hits * (len(new) - len(old)) > cap:
        raise ExpressionError(f"replace() would produce more than {cap} characters")


# --------------------------------------------------------------------------------------
# Operators, filters and calls with limits.


def _guarded_mul(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int):
        bits = _budget().limits.max_int_bits
        if abs(left).bit_length() + abs(right).bit_length() > bits:
            raise ExpressionError(f"product larger than {bits} bits")
    else:
        _check_repeat(left, right)
        _check_repeat(right, left)
    return left * right


def _guarded_pow(base: Any, exponent: Any) -> Any:
    # float overflow raises OverflowError by itself; only exact ints can grow without bound
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        bits = _budget().limits.max_int_bits
        if (abs(base).bit_length() - 1) * exponent > bits:
            raise ExpressionError(f"power larger than {bits} bits")
    return base**exponent


def _guarded_add(left: Any, right: Any) -> Any:
    if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
        limits = _budget().limits
        cap = limits.max_output_chars if isinstance(left, str) else limits.max_items
        if len(left) + len(right) > cap:
            raise ExpressionError(f"concatenation longer than {cap}")
    return left + right


def _guarded_mod(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        _check_percent_format(left)
        return _check_size(left % right)
    return left % right


def _concat(parts: list[Any]) -> str:
    """Replaces Jinja's ``~`` so that string building in loops stays within the size limit."""
    pieces = [str(_finalize(part)) for part in parts]
    cap = _budget().limits.max_output_chars
    if sum(len(piece) for piece in pieces) > cap:
        raise ExpressionError(f"concatenation longer than {cap} characters")
    return "".join(pieces)


def _loop_guard(iterable: Any) -> Iterator[Any]:
    """Wraps every ``{% for %}`` iterable: loops without calls must still see the deadline."""
    budget = _budget()
    if isinstance(iterable, Undefined):
        return
    for index, item in enumerate(iterable):
        if index & 63 == 0:
            budget.check_time()
        yield item


def _finalize(value: Any) -> Any:
    if value is None or isinstance(value, Undefined):
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, Undefined):
        return None
    if isinstance(value, tuple | set | frozenset | range):
        return list(value)
    return str(value)


def _tojson(value: Any, indent: int | None = None) -> str:
    if indent is not None:
        _check_width_args((indent,), {})
    text = json.dumps(value, ensure_ascii=False, indent=indent, default=_json_default)
    _check_size(text)
    return text


def _fromjson(value: Any) -> Any:
    if isinstance(value, Undefined) or value is None:
        return None
    try:
        return json.loads(value)
    except (TypeError, ValueError) as exc:
        raise ExpressionError(f"fromjson: {exc}") from exc


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the size limit to a Jinja filter: pre-checks for the filters whose output can
    dwarf their input (the allocation itself is the danger), a post-check for all."""

    def guarded(*args: Any, **kwargs: Any) -> Any:
        cap = _budget().limits.max_output_chars
        if name == "center":  # (value, width)
            _check_width_args(args[1:], kwargs)
        elif name == "indent" and args:  # (s, width, first, blank)
            width = kwargs.get("width", args[1] if len(args) > 1 else 4)
            lines = str(args[0]).count("\n") + 1
            pad = len(width) if isinstance(width, str) else width
            if isinstance(pad, int) and len(str(args[0])) + lines * pad > cap:
                raise ExpressionError(f"indent() would produce more than {cap} characters")
        elif name == "replace" and len(args) >= 4:  # (eval_ctx, s, old, new[, count])
            _check_replace(str(args[1]), args[2], args[3], *args[4:5])
        elif name == "format" and args and isinstance(args[0], str):
            _check_percent_format(args[0])
        elif name == "wordwrap":  # (environment, s, width, break_long_words, wrapstring)
            wrap = kwargs.get("wrapstring") or (args[4] if len(args) > 4 else None)
            text = args[1] if len(args) > 1 else ""
            if (
                isinstance(wrap, str)
                and isinstance(text, str)
                and len(text) * (len(wrap) + 1) > cap
            ):
                raise ExpressionError(f"wordwrap() would produce more than {cap} characters")
        return _check_size(func(*args, **kwargs))

    # update_wrapper copies __dict__, which carries Jinja's pass_context/pass_eval_context
    return update_wrapper(guarded, func)


class _BoundedFormatter(SandboxedFormatter):
    def format_field(self, value: Any, format_spec: str) -> Any:
        cap = _budget().limits.max_output_chars
        for digits in _DIGITS.findall(format_spec):
            if len(digits) > 9 or int(digits) > cap:
                raise ExpressionError(f"format width above {cap}")
        return super().format_field(value, format_spec)


class _Undefined(ChainableUndefined):
    """Lenient: ``x.y.z`` on undefined values is undefined, not an error."""

    __slots__ = ()


class _SafeTransformer(NodeTransformer):
    """Routes loops and ``~`` through guards that see the deadline and size limit."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "heddle.loop", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(
            nodes.List(node.nodes, lineno=node.lineno),
            "heddle.concat",
            [],
            [],
            None,
            None,
            lineno=node.lineno,
        )


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(
            undefined=_Undefined,
            autoescape=False,
            finalize=_finalize,
            # prompts and request bodies must keep their exact text
            keep_trailing_newline=True,
            cache_size=0,  # our own lru caches sit in front
        )
        self.binop_table = {
            **self.binop_table,
            "*": _guarded_mul,
            "**": _guarded_pow,
            "+": _guarded_add,
            "%": _guarded_mod,
        }
        # lipsum(n) has no size bound and no use in a workflow engine
        self.globals.pop("lipsum", None)
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self.filters["tojson"] = _tojson
        self.filters["fromjson"] = _fromjson
        # internal filters; their dotted names cannot be written in a template
        self.filters["heddle.loop"] = _loop_guard
        self.filters["heddle.concat"] = _concat

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        return self.binop_table[operator](left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Node outputs are dicts: a field named like a dict method (items, values, keys...)
        # must win over the method.
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is not allowed"
        )

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) or (
            value.__name__ not in ("format", "format_map")
        ):
            return None
        owner = value.__self__
        if not isinstance(owner, str) or isinstance(owner, Markup):
            return super().wrap_str_format(value)
        formatter = _BoundedFormatter(self)
        is_format_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one positional argument")
                kwargs, args = args[0], ()
            return str(_check_size(formatter.vformat(owner, args, kwargs)))

        return update_wrapper(wrapper, value)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _budget().check_time()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and isinstance(__obj, types.BuiltinMethodType):
            if __obj.__name__ in _PADDING_METHODS:
                _check_width_args(args, kwargs)
            elif __obj.__name__ == "replace":
                _check_replace(owner, *args[:3])
        result = super().call(__context, __obj, *args, **kwargs)
        return _check_size(result)


_ENV: Final = _Environment()
_GLOBAL_NAMES: Final = frozenset(_ENV.globals)
_SPECIAL_LOCALS: Final = frozenset({"loop", "caller", "varargs", "kwargs", "self", "super"})


# --------------------------------------------------------------------------------------
# Analysis (parse once per distinct source) and compilation (once per distinct source).


@dataclass(frozen=True, slots=True)
class TemplateInfo:
    """What the templates inside a value read, and what is wrong with them."""

    names: frozenset[str]
    paths: frozenset[tuple[str, ...]]
    #: One message per problem, each naming the offending source (as ``check`` returns).
    errors: tuple[str, ...]


_NO_TEMPLATES: Final = TemplateInfo(frozenset(), frozenset(), ())


#: A path segment: an attribute/key name, or an integer index.
_Segment = str | int


@dataclass(frozen=True, slots=True)
class _Analysis:
    source: str
    names: frozenset[str]
    paths: frozenset[tuple[str, ...]]
    errors: tuple[str, ...]
    #: For templates made only of text and ``{{ a.b[0] }}`` blocks: alternating text (str)
    #: and paths (tuple of segments); lets rendering skip Jinja entirely.
    simple: tuple[str | tuple[_Segment, ...], ...] | None
    #: Whether the source is exactly one expression, i.e. renders to a native value.
    native: bool
    info: TemplateInfo = _NO_TEMPLATES

    def __post_init__(self) -> None:
        errors = tuple(str(ExpressionError(error, self.source)) for error in self.errors)
        object.__setattr__(self, "info", TemplateInfo(self.names, self.paths, errors))


def _split_path(path: str) -> tuple[_Segment, ...]:
    head = re.match(_IDENT, path)
    assert head is not None
    segments: list[_Segment] = [head.group(0)]
    for attr, index in _PATH_PART.findall(path[head.end() :]):
        segments.append(attr if attr else int(index))
    return tuple(segments)


def _simple_analysis(source: str, bare: bool) -> _Analysis | None:
    if "\r" in source:  # Jinja normalises newlines in template text
        return None
    parts: list[str | tuple[_Segment, ...]] = []
    if bare:
        match = _SIMPLE_BARE.fullmatch(source)
        if match is None:
            return None
        parts.append(_split_path(match.group(1)))
    else:
        if "{%" in source or "{#" in source:
            return None
        position = 0
        for match in _SIMPLE_BLOCK.finditer(source):
            text = source[position : match.start()]
            if "{{" in text or text.endswith("{"):
                return None  # "{{{ a }}": Jinja's block starts at the first "{{"
            if text:
                parts.append(text)
            parts.append(_split_path(match.group(1)))
            position = match.end()
        tail = source[position:]
        if "{{" in tail:
            return None
        if tail:
            parts.append(tail)
    paths = [p for p in parts if isinstance(p, tuple)]
    for path in paths:
        if path[0] in _JINJA_WORDS or path[0] in _GLOBAL_NAMES or path[0] in _SPECIAL_LOCALS:
            return None
        if any(isinstance(seg, str) and seg.startswith("_") for seg in path[1:]):
            return None  # leave private-attribute handling to the sandbox and check()
    native = len(paths) == 1 and all(isinstance(p, tuple) or not p.strip() for p in parts)
    return _Analysis(
        source=source,
        names=frozenset(str(p[0]) for p in paths),
        paths=frozenset(tuple(str(seg) for seg in p) for p in paths),
        errors=(),
        simple=tuple(parts),
        native=native,
    )


def _parse(source: str, bare: bool) -> nodes.Template:
    if bare:
        parser = Parser(_ENV, source, state="variable")
        expr = parser.parse_expression()
        if not parser.stream.eos:
            raise TemplateSyntaxError(
                "unexpected text after the expression", parser.stream.current.lineno
            )
        return nodes.Template([nodes.Output([expr], lineno=1)], lineno=1)
    return _ENV.parse(source)


def _native_expression(tree: nodes.Template) -> nodes.Expr | None:
    """The single expression of a template like ``'  {{ expr }} '``, if it is one."""
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    found: nodes.Expr | None = None
    for child in tree.body[0].nodes:
        if isinstance(child, nodes.TemplateData):
            if child.data.strip():
                return None
        elif found is None:
            found = child
        else:
            return None
    return found


class _TreeFacts:
    def __init__(self) -> None:
        self.loads: set[str] = set()
        self.stores: set[str] = set()
        self.paths: set[tuple[str, ...]] = set()
        self.errors: list[str] = []

    def walk(self, node: nodes.Node) -> None:
        if isinstance(node, nodes.Getattr | nodes.Getitem):
            chain: list[str] = []
            cur: nodes.Node = node
            while True:
                if isinstance(cur, nodes.Getattr):
                    self._check_attr(cur.attr)
                    chain.append(cur.attr)
                    cur = cur.node
                elif (
                    isinstance(cur, nodes.Getitem)
                    and isinstance(cur.arg, nodes.Const)
                    and isinstance(cur.arg.value, str | int)
                    and not isinstance(cur.arg.value, bool)
                ):
                    chain.append(str(cur.arg.value))
                    cur = cur.node
                else:
                    break
            if cur is not node:
                if isinstance(cur, nodes.Name) and cur.ctx == "load":
                    self.loads.add(cur.name)
                    self.paths.add((cur.name, *reversed(chain)))
                else:
                    self.walk(cur)
                return
        if isinstance(node, nodes.Name):
            if node.ctx == "load":
                self.loads.add(node.name)
                self.paths.add((node.name,))
            else:
                self.stores.add(node.name)
        elif isinstance(node, nodes.Filter | nodes.Test):
            table = _ENV.filters if isinstance(node, nodes.Filter) else _ENV.tests
            kind = "filter" if isinstance(node, nodes.Filter) else "test"
            if node.name not in table or node.name.startswith("heddle."):
                self.errors.append(f"unknown {kind} {node.name!r}")
        elif isinstance(node, nodes.Import | nodes.FromImport | nodes.Include | nodes.Extends):
            self.errors.append("imports, includes and extends are not allowed")
        elif isinstance(node, nodes.Block):
            self.errors.append("blocks are not allowed")
        for child in node.iter_child_nodes():
            self.walk(child)

    def _check_attr(self, attr: str) -> None:
        if attr.startswith("__"):
            self.errors.append(f"access to private attribute {attr!r} is not allowed")


@lru_cache(maxsize=16384)
def _analyze(source: str, bare: bool) -> _Analysis:
    simple = _simple_analysis(source, bare)
    if simple is not None:
        return simple
    return _parsed_analysis(source, bare)


def _parsed_analysis(source: str, bare: bool) -> _Analysis:
    """The analysis through Jinja's parser (no shortcut): what every fast path must match."""
    try:
        tree = _parse(source, bare)
    except Exception as exc:  # TemplateSyntaxError mostly; RecursionError on deep nesting
        return _Analysis(source, frozenset(), frozenset(), (_describe(exc),), None, False)
    facts = _TreeFacts()
    facts.walk(tree)
    hidden = facts.stores | _GLOBAL_NAMES | _SPECIAL_LOCALS
    names = frozenset(facts.loads - hidden)
    return _Analysis(
        source=source,
        names=names,
        paths=frozenset(p for p in facts.paths if p[0] in names),
        errors=tuple(dict.fromkeys(facts.errors)),
        simple=None,
        native=_native_expression(tree) is not None,
    )


#: ``{{ a.b.c }}`` blocks (dotted names only) and bare ``a.b.c`` expressions.
_DOTTED = rf"{_IDENT}(?:\.{_IDENT})*"
_DOTTED_BLOCK: Final = re.compile(r"\{\{[ \t\n]*(" + _DOTTED + r")[ \t\n]*\}\}")
_DOTTED_BARE: Final = re.compile(r"[ \t\n]*(" + _DOTTED + r")[ \t\n]*")
#: Roots that make a path something else than a reference (see _simple_analysis).
_NOT_A_REFERENCE: Final = _JINJA_WORDS | _GLOBAL_NAMES | _SPECIAL_LOCALS


def _dotted_info(source: str, bare: bool) -> TemplateInfo | None:
    """The names and paths of a template made only of text and ``{{ a.b }}`` blocks (or a
    bare ``a.b``), read with one regex instead of the parser; None for anything else.

    The commonest templates of large definitions (``Summarize {{ n17.text }} for
    {{ inputs.topic }}``) are of this kind. The text around the blocks holds no other
    ``{`` (no statement, comment, second or broken block), no path starts with a keyword,
    constant, global or special local and none reads a private (``_``) attribute, so the
    parser would see exactly these blocks: the same facts as ``_parsed_analysis``.
    """
    if "\r" in source:  # Jinja normalises newlines in template text
        return None
    if bare:
        match = _DOTTED_BARE.fullmatch(source)
        if match is None:
            return None
        found = [match.group(1)]
    else:
        found = _DOTTED_BLOCK.findall(source)
        if not found or source.count("{") != 2 * len(found):
            return None
    names: set[str] = set()
    paths: set[tuple[str, ...]] = set()
    for text in found:
        path = tuple(text.split("."))
        if path[0] in _NOT_A_REFERENCE:
            return None
        for segment in path[1:]:
            if segment[0] == "_":
                return None
        names.add(path[0])
        paths.add(path)
    return TemplateInfo(frozenset(names), frozenset(paths), ())


#: _DOTTED_BLOCK and _DOTTED_BARE with a path's root and the rest of it (".b.c", or "") apart.
_DOTTED_PARTS: Final = re.compile(
    r"\{\{[ \t\n]*(" + _IDENT + r")((?:\." + _IDENT + r")*)[ \t\n]*\}\}"
)
#: A bare expression of dotted paths and numbers joined by arithmetic and comparison
#: operators (``n17.value * 2``, ``a.b >= c``): the parser finds in it exactly its paths
#: (an operand is a name, a getattr chain or a constant), each path's root a name.
_ARITHMETIC_BARE: Final = re.compile(
    r"[ \t\n]*(?:{o})(?:[ \t\n]*(?://|==|!=|<=|>=|[-+*/%<>])[ \t\n]*(?:{o}))*[ \t\n]*".format(
        o=_DOTTED + r"|(?:[1-9][0-9]*|0)(?:\.[0-9]+)?"
    )
)
#: A path's root and the rest of it, for findall over one of those expressions.
_PATH_PARTS: Final = re.compile(r"(" + _IDENT + r")((?:\." + _IDENT + r")*)")


def dotted_paths(
    sources: list[str], bare: bool
) -> tuple[list[bool], list[int], list[str], list[str]]:
    """``_dotted_info`` of many sources at once, in whole-list passes: a 100,000-node
    definition has about as many distinct templates, and a Python call (or even a regex
    call) per source costs more than the reading.

    Bare sources may also be dotted paths and numbers joined by arithmetic and comparison
    operators (``n17.value * 2``: a transform's usual expression), read as the parser reads
    them (``_ARITHMETIC_BARE``).

    Returns whether each source is of that kind (its info is then: no error, the paths
    below, their roots as names; ask ``inspect_templates`` about the others) and, flat, for
    every block of those that are: the index of its source, its path's root, and the rest
    of its path as written (``".b.c"``, ``""`` for none). A path may come more than once.
    """
    count = len(sources)
    joined = "\x00".join(sources)
    if bare:  # a dotted path, or paths and numbers joined by operators
        ok = list(map(is_not, map(_ARITHMETIC_BARE.fullmatch, sources), repeat(None)))
        found = list(map(_PATH_PARTS.findall, compress(sources, ok)))
        parts = list(chain.from_iterable(found))
        owners = list(chain.from_iterable(map(repeat, compress(range(count), ok), map(len, found))))
    else:
        braces = list(map(str.count, sources, repeat("{")))
        # No block holds a NUL, so the blocks of the sources joined by NULs are those of
        # each source, in order. A source holds at most braces/2 of them (the text around
        # its blocks must hold no other '{', and there must be one): as many in all means
        # that each holds exactly that many.
        parts = _DOTTED_PARTS.findall(joined)
        if 2 * len(parts) == sum(braces) and all(braces):
            ok = [True] * count
            halves = map(floordiv, braces, repeat(2))
            owners = list(chain.from_iterable(map(repeat, range(count), halves)))
        else:
            found = list(map(_DOTTED_PARTS.findall, sources))
            sizes = list(map(len, found))
            ok = list(map(and_, map(truth, sizes), map(eq, braces, map(mul, sizes, repeat(2)))))
            parts = list(chain.from_iterable(compress(found, ok)))
            held = map(repeat, compress(range(count), ok), compress(sizes, ok))
            owners = list(chain.from_iterable(held))
    roots = list(map(itemgetter(0), parts))
    rests = list(map(itemgetter(1), parts))
    # (a private segment shows as "._" in the rests: segments are identifiers)
    if "\r" not in joined and _NOT_A_REFERENCE.isdisjoint(roots) and "._" not in "".join(rests):
        return ok, owners, roots, rests
    declined = {i for i, source in enumerate(sources) if "\r" in source}
    for owner, root, rest in zip(owners, roots, rests, strict=True):
        if root in _NOT_A_REFERENCE or "._" in rest:
            declined.add(owner)
    for i in declined:
        ok[i] = False
    kept = [owner not in declined for owner in owners]
    return (
        ok,
        list(compress(owners, kept)),
        list(compress(roots, kept)),
        list(compress(rests, kept)),
    )


#: A word of a template's source (not one inside another word, after a digit or an '_').
_SHAPE_WORD: Final = re.compile(r"\b[A-Za-z][A-Za-z0-9_]*")


@lru_cache(maxsize=1)
def _shape_kept() -> frozenset[str]:
    # Words whose spelling the parser or the checks depend on: keywords, constants, the
    # globals and special locals, every filter and test name.
    return (
        _JINJA_WORDS
        | _GLOBAL_NAMES
        | _SPECIAL_LOCALS
        | frozenset(_ENV.filters)
        | frozenset(_ENV.tests)
    )


#: A template's shape (its text with every word blanked, whether it is bare, and per word
#: either the word itself, when kept, or the index of its first occurrence among the renamed
#: ones) -> the shape's names and paths, renamed words as those indices; None when the
#: shape has errors (then the source is analysed as itself).
_ShapeKey = tuple[str, bool, tuple[str | int, ...]]
_ShapeFacts = tuple[tuple[str | int, ...], tuple[tuple[str | int, ...], ...]]
_SHAPES: dict[_ShapeKey, _ShapeFacts | None] = {}


@lru_cache(maxsize=16384)
def _template_info(source: str, bare: bool) -> TemplateInfo:
    """``_analyze(source, bare).info``, through the template's shape when it has one.

    Templates of a large definition mostly differ only by the node ids they read
    (``{{ n17.text }} and {{ inputs.topic }}``): each word that is not a keyword, constant,
    global, filter or test is renamed, consistently, to a placeholder, and the shape is
    analysed (parsed once for all its instances) and mapped back. The renaming is a
    bijection on the words the parser treats alike, so the names and paths are those of the
    source; a shape with any error, a statement, a comment, a string literal or a
    non-ASCII character is analysed as itself (its messages quote the real source).
    Templates of dotted names only skip even that (``_dotted_info``).
    """
    dotted = _dotted_info(source, bare)
    if dotted is not None:
        return dotted
    if (
        "'" in source
        or '"' in source
        or "{%" in source
        or "{#" in source
        or "\x00" in source
        or not source.isascii()
    ):
        return _analyze(source, bare).info
    kept = _shape_kept()
    words = _SHAPE_WORD.findall(source)
    renamed: dict[str, int] = {}
    pattern = tuple(
        word if word in kept else renamed.setdefault(word, len(renamed)) for word in words
    )
    key = (_SHAPE_WORD.sub("\x00", source), bare, pattern)
    if key in _SHAPES:
        facts = _SHAPES[key]
    else:
        if len(_SHAPES) > 4096:
            _SHAPES.clear()
        facts = _SHAPES[key] = _shape_facts(key)
    if facts is None:
        return _analyze(source, bare).info
    names, paths = facts
    originals = list(renamed)
    return TemplateInfo(
        frozenset(originals[n] if isinstance(n, int) else n for n in names),
        frozenset(
            tuple(originals[seg] if isinstance(seg, int) else seg for seg in path) for path in paths
        ),
        (),
    )


def _shape_facts(key: _ShapeKey) -> _ShapeFacts | None:
    blanked, bare, pattern = key
    pieces = blanked.split("\x00")
    shape = pieces[0]
    for word, piece in zip(pattern, pieces[1:], strict=True):
        shape += (f"hx{word}" if isinstance(word, int) else word) + piece
    analysis = _analyze(shape, bare)
    if analysis.errors:
        return None
    index = {f"hx{i}": i for i in range(len(pattern))}

    def back(word: str) -> str | int:
        return index.get(word, word)

    return (
        tuple(back(name) for name in analysis.names),
        tuple(tuple(back(seg) for seg in path) for path in analysis.paths),
    )


@dataclass(frozen=True, slots=True)
class _Compiled:
    render_func: Callable[[Context], Iterator[str]]
    native: bool


@lru_cache(maxsize=4096)
def _compile(source: str, bare: bool) -> _Compiled:
    analysis = _analyze(source, bare)
    if analysis.errors:
        raise ExpressionError(analysis.errors[0], source)
    try:
        tree = _parse(source, bare)
        expr = _native_expression(tree)
        if expr is not None:
            tree = nodes.Template(
                [nodes.Assign(nodes.Name(_RESULT_NAME, "store"), expr, lineno=1)], lineno=1
            )
        tree = _SafeTransformer().visit(tree)
        tree.set_environment(_ENV)
        template = _ENV.from_string(tree)
    except TemplateSyntaxError as exc:
        raise ExpressionError(f"syntax error: {exc.message}", source) from None
    except Exception as exc:  # codegen refusals, e.g. an unknown filter
        raise ExpressionError(_describe(exc), source) from None
    return _Compiled(template.root_render_func, expr is not None)


def clear_caches() -> None:
    """Forget every parsed and compiled template (for benchmarks of cold performance)."""
    _analyze.cache_clear()
    _template_info.cache_clear()
    _SHAPES.clear()
    _compile.cache_clear()


# --------------------------------------------------------------------------------------
# Rendering.


class _Fallback(Exception):
    """The fast path met something only Jinja knows how to handle."""


_UNDEFINED: Final = object()


def _lookup(scope: Mapping[str, Any], path: tuple[_Segment, ...]) -> Any:
    """Mirror of the sandbox's lookups for plain dicts and lists; ``_Fallback`` otherwise."""
    root = path[0]
    obj = scope.get(root, _UNDEFINED)  # type: ignore[arg-type]
    for segment in path[1:]:
        if obj is _UNDEFINED or obj is None:
            return _UNDEFINED
        kind = type(obj)
        if kind is dict:
            if segment in obj:
                obj = obj[segment]
            elif isinstance(segment, int):
                return _UNDEFINED
            else:
                raise _Fallback  # could be a dict method
        elif kind is list and isinstance(segment, int):
            obj = obj[segment] if segment < len(obj) else _UNDEFINED
        else:
            raise _Fallback
    return obj


def _native_result(value: Any, source: str) -> Any:
    if value is None or type(value) in (str, int, float, bool, dict, list):
        return _scrub(value)
    if isinstance(value, Undefined):
        return None
    if isinstance(value, Markup):
        return str(value)
    if isinstance(value, types.GeneratorType | range | map | filter | KeysView | ValuesView):
        return _scrub(list(value))
    if isinstance(value, ItemsView):
        return _scrub([list(pair) for pair in value])
    if callable(value):
        raise ExpressionError("the expression evaluates to a function (missing '()'?)", source)
    return _scrub(value)


def _scrub(value: Any) -> Any:
    """Undefined values nested in a native result become None; unchanged values keep their
    identity (no copy of large upstream outputs)."""
    if isinstance(value, Undefined):
        return None
    kind = type(value)
    if kind is list or kind is tuple:
        items = [_scrub(item) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return items if kind is list else tuple(items)
    if kind is dict:
        pairs = {key: _scrub(item) for key, item in value.items()}
        if all(pairs[key] is item for key, item in value.items()):
            return value
        return pairs
    return value


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ExpressionError):
        return exc.message
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error: {message}"
    if isinstance(exc, SecurityError):
        return f"not allowed: {message}"
    if isinstance(exc, RecursionError):
        return "recursion too deep"
    if isinstance(exc, MemoryError):
        return "out of memory"
    if type(exc).__module__.startswith("jinja2"):
        return str(message)
    return f"{type(exc).__name__}: {message}"


def _render_source(source: str, bare: bool, scope: dict[str, Any], budget: _Budget) -> Any:
    analysis = _analyze(source, bare)
    if analysis.errors:
        raise ExpressionError(analysis.errors[0], source)
    if analysis.simple is not None:
        try:
            return _render_simple(analysis, scope, budget.limits, source)
        except _Fallback:
            pass
    compiled = _compile(source, bare)
    budget.expression = source
    context = _ENV.context_class(_ENV, scope, None, {})
    try:
        if compiled.native:
            for _ in compiled.render_func(context):
                pass
            return _native_result(context.vars.get(_RESULT_NAME), source)
        chunks: list[str] = []
        size = 0
        cap = budget.limits.max_output_chars
        for chunk in compiled.render_func(context):
            size += len(chunk)
            if size > cap:
                raise ExpressionError(f"output longer than {cap} characters", source)
            budget.check_time()
            chunks.append(chunk)
        return "".join(chunks)
    except ExpressionError as exc:
        raise ExpressionError(exc.message, source) from None
    except Exception as exc:
        raise ExpressionError(_describe(exc), source) from None


def _render_simple(analysis: _Analysis, scope: dict[str, Any], limits: Limits, source: str) -> Any:
    assert analysis.simple is not None
    if analysis.native:
        for part in analysis.simple:
            if isinstance(part, tuple):
                value = _lookup(scope, part)
                return None if value is _UNDEFINED else value
    pieces: list[str] = []
    for part in analysis.simple:
        if isinstance(part, str):
            pieces.append(part)
        else:
            value = _lookup(scope, part)
            if value is _UNDEFINED or value is None:
                continue
            if type(value) not in (str, int, float, bool, dict, list):
                raise _Fallback
            pieces.append(str(_finalize(value)))
    text = "".join(pieces)
    if len(text) > limits.max_output_chars:
        raise ExpressionError(f"output longer than {limits.max_output_chars} characters", source)
    return text


def _render_value(value: Any, scope: dict[str, Any], budget: _Budget) -> Any:
    if isinstance(value, str):
        if not is_templated(value):
            return value
        return _render_source(value, False, scope, budget)
    if isinstance(value, dict):
        return {key: _render_value(item, scope, budget) for key, item in value.items()}
    if isinstance(value, list):
        return [_render_value(item, scope, budget) for item in value]
    if isinstance(value, tuple):
        return tuple(_render_value(item, scope, budget) for item in value)
    return value


def _scope(context: Mapping[str, Any]) -> dict[str, Any]:
    # globals first so that a context key shadows a global, as in Jinja
    return {**_ENV.globals, **context}


def _has_templates(value: Any) -> bool:
    if isinstance(value, str):
        return is_templated(value)
    if isinstance(value, dict):
        return any(_has_templates(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_has_templates(item) for item in value)
    return False


def render(value: Any, context: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> Any:
    """Render every template string inside ``value`` (dicts and lists recursively).

    A string that is exactly one ``{{ expr }}`` yields the native value of ``expr``; other
    template strings yield strings; non-template values are returned as they are. The whole
    call shares one time budget of ``limits.max_seconds``.

    Raises:
        ExpressionError: on a syntax error, a sandbox violation, a failing operation or an
            exceeded limit; its ``expression`` is the offending source.
    """
    if isinstance(value, str) and not is_templated(value):
        return value
    if not isinstance(value, str) and not _has_templates(value):
        return value
    budget = _Budget(limits, time.monotonic() + limits.max_seconds)
    token = _BUDGET.set(budget)
    try:
        return _render_value(value, _scope(context), budget)
    finally:
        _BUDGET.reset(token)


def evaluate(expression: str, context: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> Any:
    """Evaluate ``"{{ expr }}"`` or a bare ``"expr"`` and return its native value.

    Used for conditions, switches, ``when`` gates and transforms. A string with template
    syntax that is more than one expression (``"a {{ b }}"``) evaluates to the rendered
    string.

    Raises:
        ExpressionError: as ``render`` does; also for an empty expression.
    """
    if not isinstance(expression, str):
        raise ExpressionError(f"an expression must be a string, not {type(expression).__name__}")
    if not expression.strip():
        raise ExpressionError("empty expression", expression)
    bare = not is_templated(expression)
    budget = _Budget(limits, time.monotonic() + limits.max_seconds)
    token = _BUDGET.set(budget)
    try:
        return _render_source(expression, bare, _scope(context), budget)
    finally:
        _BUDGET.reset(token)


def _sources(value: Any, bare: bool) -> Iterator[tuple[str, bool]]:
    if isinstance(value, str):
        if is_templated(value):
            yield value, False
        elif bare and value.strip():
            yield value, True
    elif isinstance(value, dict):
        for item in value.values():
            yield from _sources(item, False)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _sources(item, False)


def references(value: Any, *, expression: bool = False) -> set[str]:
    """Top-level names that the templates inside ``value`` read (``{"inputs", "fetch"}``).

    Names bound inside a template (``{% set %}``, loop variables) and Jinja's globals are
    not references. With ``expression=True`` a top-level string without template syntax is
    read as a bare expression (as ``evaluate`` does). Strings that do not parse contribute
    nothing; ``check`` reports them.
    """
    names: set[str] = set()
    for source, bare in _sources(value, expression):
        names.update(_analyze(source, bare).names)
    return names


def reference_paths(value: Any, *, expression: bool = False) -> set[tuple[str, ...]]:
    """The constant access paths behind ``references``: ``{{ fetch.body[0] }}`` gives
    ``("fetch", "body", "0")``; a dynamic subscript ends the path (``a[b].c`` gives
    ``("a",)`` and ``("b",)``)."""
    paths: set[tuple[str, ...]] = set()
    for source, bare in _sources(value, expression):
        paths.update(_analyze(source, bare).paths)
    return paths


def check(value: Any, *, expression: bool = False) -> list[str]:
    """Syntax and safety problems of the templates inside ``value``, one message each,
    naming the offending source; ``[]`` when all is well. Does not evaluate anything."""
    problems: list[str] = []
    for source, bare in _sources(value, expression):
        for error in _analyze(source, bare).errors:
            problems.append(str(ExpressionError(error, source)))
    return problems


def inspect_templates(value: Any, *, expression: bool = False) -> TemplateInfo:
    """``references``, ``reference_paths`` and ``check`` in one walk over ``value``."""
    if type(value) is str:  # the common case, kept to one cached lookup
        if "{" in value and is_templated(value):
            return _template_info(value, False)
        if expression and value.strip():
            return _template_info(value, True)
        return _NO_TEMPLATES
    infos = [_template_info(source, bare) for source, bare in _sources(value, expression)]
    if not infos:
        return _NO_TEMPLATES
    if len(infos) == 1:
        return infos[0]
    return TemplateInfo(
        frozenset().union(*(i.names for i in infos)),
        frozenset().union(*(i.paths for i in infos)),
        tuple(error for i in infos for error in i.errors),
    )
