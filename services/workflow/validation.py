"""Validation of workflow definitions against the node-type catalog.

``validate_definition`` lists every problem it finds, each located by node id, edge index and
a field path such as ``nodes[2].params.url``, rather than stopping at the first one: editors
show them all at once. Warnings do not make a definition invalid.

It is on the save path and the gateway's validate endpoint, and must stay fast for large
graphs (10,000 nodes well under 0.1 s): integer indices, one jsonschema validator per node
type plus a fast pre-check for the common simple schemas, template parsing cached per
distinct string, and ancestor sets computed only for nodes that reference non-parents.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain, compress, repeat
from operator import and_, attrgetter, eq, is_, is_not, itemgetter, methodcaller, ne, not_, or_
from typing import Any, Literal, cast

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError as BrokenSchema
from jsonschema.exceptions import ValidationError as SchemaError
from jsonschema.validators import validator_for
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from libs.common import jsonutil
from libs.common.definition import (
    BARE_EXPRESSION_PARAMS,
    LITERAL_PARAMS,
    NODE_ID_PATTERN,
    ON_FAILURE_NODE_ID,
    RESERVED_NAMES,
    EdgeSpec,
    InputSpec,
    NodeSpec,
    OnFailureSpec,
    WorkflowDefinition,
    allocation_burst,
    expression_sources,
    node_id_problem,
)
from libs.common.delegates import is_delegate
from libs.common.expressions import TemplateInfo, dotted_paths, inspect_templates, is_templated
from libs.common.node_types import ERROR_PORT, NodeTypeSpec
from services.workflow.planner import DefinitionGraph, kahn_order

__all__ = [
    "CONTEXT_ROOTS",
    "DEFAULT_MAX_EDGES",
    "DEFAULT_MAX_NODES",
    "ValidationIssue",
    "ValidationReport",
    "validate_definition",
]

DEFAULT_MAX_NODES = 10_000
DEFAULT_MAX_EDGES = 50_000

#: Names a template may read besides node ids. ``item``/``index`` exist inside ``map``,
#: ``loop`` inside a loop node's inline node and conditions.
CONTEXT_ROOTS: frozenset[str] = frozenset(
    {"inputs", "system", "secrets", "env", "item", "index", "loop"}
)
#: `env` stays a reserved root but is refused: the deployment's environment is not exposed to
#: workflows (it holds the services' own credentials); inputs and secrets are the way in.
ENV_REFUSED = (
    "'env' is not available to workflows: pass deployment values as inputs, or store them "
    "as secrets and use {{ secrets.NAME }}"
)

#: The context roots a reference may read without a word (``env`` is refused).
_QUIET_ROOTS = CONTEXT_ROOTS - {"env"}
#: From this many nodes on, the references are first checked in whole-list passes
#: (_Checker._references_worth_a_look); below, node by node is as quick.
_BULK_REFERENCES = 200


def _segments(rest: str | tuple[str, ...]) -> tuple[str, ...]:
    """A path's segments after its root, from dotted_paths' text (".b.c") or as they are."""
    return tuple(rest.split(".")[1:]) if isinstance(rest, str) else rest


#: Node types whose ``expression`` param is mandatory.
_EXPRESSION_REQUIRED = frozenset({"condition", "switch", "transform"})
_INPUT_TYPE = "input"
_NO_KEYS: frozenset[str] = frozenset()
#: The node types whose params name tools (see _Checker._check_tools).
_TOOL_TYPES = frozenset({"tool", "agent"})
_ID = NODE_ID_PATTERN.removeprefix("^").removesuffix("$")
_IDS = re.compile(rf"{_ID}(?:\n{_ID})*")


def _ids_valid(ids: list[str]) -> bool:
    """Whether every id is a valid node id (node_id_problem says None), in one regex pass
    over the ids joined by newlines (an id holding a newline changes the count: refused)."""
    if not ids:
        return True
    joined = "\n".join(ids)
    return (
        joined.count("\n") == len(ids) - 1
        and _IDS.fullmatch(joined) is not None
        and RESERVED_NAMES.isdisjoint(ids)
    )


_NODE_ID = attrgetter("id")
_NODE_TYPE = attrgetter("type")
_NODE_PARAMS = attrgetter("params")
_NODE_WHEN = attrgetter("when")
_NODE_DEFAULT_OUTPUT = attrgetter("default_output")
_ON_ERROR = attrgetter("on_error")
_SECOND = itemgetter(1)
_SOURCE = itemgetter("source")
_EDGE: TypeAdapter[EdgeSpec] = TypeAdapter(EdgeSpec)
_NOT_AN_EDGE = "Input should be a valid dictionary or instance of EdgeSpec"
_TARGET = itemgetter("target")
_SOURCE_PORT = methodcaller("get", "source_port")
_TARGET_PORT = methodcaller("get", "target_port")
_MAP_TYPE = "map"
_SQL_TYPE = "sql"


def _holds_sql_template(query: Any) -> bool:
    return isinstance(query, str) and ("{{" in query or "{%" in query)


#: Keywords whose errors are about an instance as a whole: with a template somewhere inside
#: it, the value at run time is unknown, so such an error may be a false alarm.
_COMBINATORS = frozenset({"anyOf", "oneOf", "allOf", "not", "if", "then", "else"})


class ValidationIssue(BaseModel):
    """One problem, located as precisely as possible."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    severity: Literal["error", "warning"] = "error"
    node_id: str | None = None
    #: Index of the edge in the definition's ``edges``.
    edge: int | None = None
    #: Path of the offending value, e.g. ``nodes[2].params.url``.
    field: str | None = None


class ValidationReport(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    valid: bool
    errors: list[ValidationIssue]
    warnings: list[ValidationIssue]
    #: The parsed definition when it is valid, else None.
    definition: WorkflowDefinition | None = None
    #: The valid definition's graph as validation built it: ``ExecutionPlan.build`` takes
    #: it instead of building it again. Not part of the report's data.
    graph: DefinitionGraph | None = Field(default=None, exclude=True, repr=False)


# --------------------------------------------------------------------------------------
# Params schemas: one compiled validator per node type, and a fast path.

_Check = Callable[[Any], bool]
_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$comment", "format", "deprecated"}
    | {"readOnly", "writeOnly", "$schema", "$id", "$defs", "definitions", "contentMediaType"}
)
_TYPE_CHECKS: dict[str, _Check] = {
    "string": lambda v: isinstance(v, str),
    # 1.0 counts as an integer for jsonschema; leave such cases to it (False = unsure)
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same_scalar(value: Any, options: Sequence[Any]) -> bool:
    if isinstance(value, dict | list):
        return False  # structural equality rules differ in jsonschema: let it decide
    return any(type(option) is type(value) and option == value for option in options)


def _always(value: Any) -> bool:
    return True


def _leaf_type(name: str) -> _Check | None:
    # exact type() tests: subclasses and 1.0-as-integer are left to jsonschema (False)
    if name == "string":
        return lambda v: type(v) is str
    exact = {
        "integer": (int,),
        "number": (int, float),
        "boolean": (bool,),
        "array": (list,),
        "object": (dict,),
        "null": (type(None),),
    }.get(name)
    if exact is None:
        return None
    return lambda v: type(v) in exact or (type(v) is str and is_templated(v))


def _object_check(schema: dict[str, Any]) -> _Check | None:
    """The commonest params schema: typed object, properties, required, closed or open."""
    closed = schema.get("additionalProperties", True) is False
    subs: dict[str, _Check] = {}
    for name, sub in schema.get("properties", {}).items():
        compiled = _compile_fast(sub)
        if compiled is None:
            return None
        subs[name] = compiled
    required = tuple(schema.get("required", ()))
    typed = "type" in schema

    def check(value: Any) -> bool:
        if type(value) is not dict:
            return not typed or (type(value) is str and is_templated(value))
        for key, item in value.items():
            sub = subs.get(key)
            if sub is None:
                if closed:
                    return False
            elif not sub(item):
                return False
        return all(key in value for key in required)

    return check


def _compile_fast(schema: Any) -> _Check | None:
    """A predicate that returns True only where relaxed jsonschema validation would report
    nothing (False means "ask jsonschema"), or None for schemas outside the subset."""
    if schema is True or schema == {}:
        return _always
    if not isinstance(schema, dict):
        return None
    keys = {k for k in schema if k not in _ANNOTATIONS and not k.startswith("x-")}
    if not keys:
        return _always
    if keys == {"type"} and isinstance(schema["type"], str):
        return _leaf_type(schema["type"])
    if (
        keys <= {"type", "properties", "required", "additionalProperties"}
        and schema.get("type", "object") == "object"
        and schema.get("additionalProperties", True) in (True, False)
        and isinstance(schema.get("properties", {}), dict)
        and isinstance(schema.get("required", []), list)
    ):
        return _object_check(schema)
    checks: list[_Check] = []
    for key in keys:
        check = _compile_keyword(key, schema[key], schema)
        if check is None:
            return None
        checks.append(check)

    def run(value: Any) -> bool:
        if type(value) is str and is_templated(value):
            return True  # a template may become anything at run time
        return all(check(value) for check in checks)

    return run


def _compile_keyword(key: str, arg: Any, schema: dict[str, Any]) -> _Check | None:
    if key == "type":
        names = [arg] if isinstance(arg, str) else arg
        if not isinstance(names, list) or any(n not in _TYPE_CHECKS for n in names):
            return None
        tests = [_TYPE_CHECKS[n] for n in names]
        return lambda v: any(test(v) for test in tests)
    if key == "properties":
        if not isinstance(arg, dict):
            return None
        subs: dict[str, _Check] = {}
        for name, sub in arg.items():
            compiled = _compile_fast(sub)
            if compiled is None:
                return None
            subs[name] = compiled
        return lambda v: (
            not isinstance(v, dict) or all(subs[k](item) for k, item in v.items() if k in subs)
        )
    if key == "additionalProperties":
        if "patternProperties" in schema:
            return None
        known = frozenset(schema.get("properties", {}))
        if arg is False:
            return lambda v: not isinstance(v, dict) or all(k in known for k in v)
        extra = _compile_fast(arg)
        if extra is None:
            return None
        return lambda v: (
            not isinstance(v, dict) or all(extra(item) for k, item in v.items() if k not in known)
        )
    if key == "required":
        if not isinstance(arg, list):
            return None
        needed = tuple(arg)
        return lambda v: not isinstance(v, dict) or all(k in v for k in needed)
    if key == "items":
        each = _compile_fast(arg)
        if each is None:
            return None
        return lambda v: not isinstance(v, list) or all(each(item) for item in v)
    if key in ("enum", "const"):
        options = list(arg) if key == "enum" else [arg]
        return lambda v: _same_scalar(v, options)
    if key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if not _is_number(arg):
            return None
        bound = arg
        compare: dict[str, Callable[[Any], bool]] = {
            "minimum": lambda v: v >= bound,
            "maximum": lambda v: v <= bound,
            "exclusiveMinimum": lambda v: v > bound,
            "exclusiveMaximum": lambda v: v < bound,
        }
        test = compare[key]
        return lambda v: not _is_number(v) or test(v)
    if key in ("minLength", "maxLength", "minItems", "maxItems"):
        if not isinstance(arg, int):
            return None
        limit = arg
        kind: type[str] | type[list[Any]] = str if key.endswith("Length") else list
        if key.startswith("min"):
            return lambda v: not isinstance(v, kind) or len(v) >= limit
        return lambda v: not isinstance(v, kind) or len(v) <= limit
    if key == "pattern":
        if not isinstance(arg, str):
            return None
        try:
            regex = re.compile(arg)
        except re.error:
            return None
        return lambda v: not isinstance(v, str) or regex.search(v) is not None
    if key in ("anyOf", "allOf"):
        if not isinstance(arg, list) or not arg:
            return None
        branches = [_compile_fast(sub) for sub in arg]
        if any(branch is None for branch in branches):
            return None
        ready = [b for b in branches if b is not None]
        if key == "anyOf":
            return lambda v: any(branch(v) for branch in ready)
        return lambda v: all(branch(v) for branch in ready)
    return None


_BatchCheck = Callable[[list[Any]], bool]


def _compile_batch(schema: Any) -> _BatchCheck | None:
    """For the commonest params schema (what ``_object_check`` takes: a typed object of
    properties, required, closed or open), a check of many params at once with C-level
    passes (types, key sets, values by key): True only where ``_compile_fast``'s check
    would be True for every one of them (False: ask it, one by one); None for other
    schemas."""
    if not isinstance(schema, dict):
        return None
    keys = {k for k in schema if k not in _ANNOTATIONS and not k.startswith("x-")}
    properties = schema.get("properties", {})
    required_list = schema.get("required", [])
    if not (
        keys <= {"type", "properties", "required", "additionalProperties"}
        and schema.get("type", "object") == "object"
        and schema.get("additionalProperties", True) in (True, False)
        and isinstance(properties, dict)
        and isinstance(required_list, list)
    ):
        return None
    closed = schema.get("additionalProperties", True) is False
    allowed = frozenset(properties)
    required = frozenset(required_list)
    subs: list[tuple[str, _Check, bool]] = []  # (name, check, a plain string)
    for name, sub in properties.items():
        check = _compile_fast(sub)
        if check is None:
            return None
        if check is not _always:
            plain = (
                isinstance(sub, dict)
                and {k for k in sub if k not in _ANNOTATIONS and not k.startswith("x-")} == {"type"}
                and sub["type"] == "string"
            )
            subs.append((name, check, plain))

    def batch(values: list[Any]) -> bool:
        if not values:
            return True
        if set(map(type, values)) != {dict}:
            return False
        for present in set(map(frozenset, values)):
            if (closed and not present <= allowed) or not required <= present:
                return False
        for name, check, plain in subs:
            if name in required:
                found = list(map(itemgetter(name), values))
            else:
                found = [value[name] for value in values if name in value]
            if plain:
                if set(map(type, found)) - {str}:
                    return False
            elif not all(map(check, found)):
                return False
        return True

    return batch


class _SchemaChecker:
    __slots__ = ("batch", "fast", "full", "schema")

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.full = Draft202012Validator(schema)
        self.fast = _compile_fast(schema)
        self.batch = _compile_batch(schema) if self.fast is not None else None

    def passes(self, params: list[dict[str, Any]]) -> list[bool] | None:
        """Whether each params passes the fast check, or None when all do."""
        if self.fast is _always or (self.batch is not None and self.batch(params)):
            return None
        fast = self.fast
        if fast is None:
            return [False] * len(params)
        oks = list(map(fast, params))
        return None if all(oks) else oks

    def errors(self, params: dict[str, Any]) -> list[SchemaError]:
        if self.fast is not None and self.fast(params):
            return []
        return [e for e in self.full.iter_errors(params) if not _is_templated_instance(e)]


def _is_templated_instance(error: SchemaError) -> bool:
    return isinstance(error.instance, str) and is_templated(error.instance)


def _holds_template(value: Any) -> bool:
    if isinstance(value, str):
        return is_templated(value)
    if isinstance(value, dict):
        return any(_holds_template(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_template(item) for item in value)
    return False


def _literal_error(error: SchemaError) -> bool:
    """Whether a schema error stands whatever the templates inside the value render to."""
    if _is_templated_instance(error):
        return False
    return not (error.validator in _COMBINATORS and _holds_template(error.instance))


# A tool's input schema comes from the tool service (built-in or MCP: any draft), keyed by
# its JSON text; None marks a schema that is itself broken (not checked).
_TOOL_VALIDATORS: dict[bytes, Any] = {}


def _tool_validator(schema: Mapping[str, Any]) -> Any:
    key = jsonutil.dumps(schema)
    if key not in _TOOL_VALIDATORS:
        if len(_TOOL_VALIDATORS) > 1024:
            _TOOL_VALIDATORS.clear()
        try:
            schema = dict(schema)
            cls = validator_for(schema, default=Draft202012Validator)
            cls.check_schema(schema)
            _TOOL_VALIDATORS[key] = cls(schema)
        except (BrokenSchema, TypeError, ValueError):
            _TOOL_VALIDATORS[key] = None
    return _TOOL_VALIDATORS[key]


# Keyed like _CHECKERS: the spec's schema object, kept alive in the entry.
_TOP_FIELDS: dict[int, tuple[dict[str, Any], tuple[str, ...] | None]] = {}


def _top_fields(spec: NodeTypeSpec) -> tuple[str, ...] | None:
    schema = spec.output_schema
    entry = _TOP_FIELDS.get(id(schema))
    if entry is None or entry[0] is not schema:
        if len(_TOP_FIELDS) > 4096:
            _TOP_FIELDS.clear()
        entry = _TOP_FIELDS[id(schema)] = (schema, _closed_fields(schema))
    return entry[1]


def _closed_fields(schema: Any) -> tuple[str, ...] | None:
    """The only fields an object of this JSON Schema can have, in schema order, or None when
    it may have others (an open object, a non-object, a combinator)."""
    if not isinstance(schema, dict) or schema.get("additionalProperties", True) is not False:
        return None
    if schema.get("type", "object") != "object" or "patternProperties" in schema:
        return None
    if any(key in schema for key in _COMBINATORS):
        return None
    properties = schema.get("properties", {})
    return tuple(properties) if isinstance(properties, dict) else None


# Keyed by the schema object's id, with the schema kept alive in the entry so the id cannot
# be reused by another dict while cached. Node-type catalogs are small and long-lived.
_CHECKERS: dict[int, _SchemaChecker] = {}


def _checker_for(spec: NodeTypeSpec) -> _SchemaChecker | None:
    schema = spec.params_schema
    checker = _CHECKERS.get(id(schema))
    if checker is None or checker.schema is not schema:
        try:
            Draft202012Validator.check_schema(schema)
        except Exception:
            return None  # a broken catalog entry must not make every definition invalid
        if len(_CHECKERS) > 4096:
            _CHECKERS.clear()
        checker = _CHECKERS[id(schema)] = _SchemaChecker(schema)
    return checker


# --------------------------------------------------------------------------------------
# Locations.


def _pointer(prefix: str, parts: Sequence[Any]) -> str:
    out = prefix
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{str(part)!r}]"
    return out


class _Issues:
    def __init__(self) -> None:
        self.errors: list[ValidationIssue] = []
        self.warnings: list[ValidationIssue] = []

    def add(
        self,
        code: str,
        message: str,
        *,
        node_id: str | None = None,
        edge: int | None = None,
        field: str | None = None,
        warning: bool = False,
    ) -> None:
        issue = ValidationIssue(
            code=code,
            message=message,
            severity="warning" if warning else "error",
            node_id=node_id,
            edge=edge,
            field=field,
        )
        (self.warnings if warning else self.errors).append(issue)


# --------------------------------------------------------------------------------------
# Entry point.


def validate_definition(
    raw: Any,
    node_types: Mapping[str, NodeTypeSpec],
    *,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_edges: int = DEFAULT_MAX_EDGES,
    tools: Mapping[str, Mapping[str, Any]] | None = None,
    tools_unavailable: str | None = None,
) -> ValidationReport:
    """Check a definition (a parsed JSON/YAML document or a ``WorkflowDefinition``).

    Every problem is listed: shape errors from the models, then graph and catalog rules on
    whatever parts of the document could be parsed. ``definition`` is set only when there
    is no error (warnings allowed).

    ``tools`` (a tool's name -> its input JSON Schema) checks the tool names of ``tool``
    nodes and agents and the literal arguments of ``tool`` nodes; None skips those checks,
    with one warning per node that uses tools when ``tools_unavailable`` says why.
    """
    with allocation_burst():
        return _validate(raw, node_types, max_nodes, max_edges, tools, tools_unavailable)


def _validate(
    raw: Any,
    node_types: Mapping[str, NodeTypeSpec],
    max_nodes: int,
    max_edges: int,
    tools: Mapping[str, Mapping[str, Any]] | None = None,
    tools_unavailable: str | None = None,
) -> ValidationReport:
    issues = _Issues()
    if isinstance(raw, WorkflowDefinition):
        definition: WorkflowDefinition | None = raw
        nodes = list(enumerate(raw.nodes))
        edge_raw, edge_models = list(range(len(raw.edges))), list(raw.edges)
        inputs = raw.inputs
        outputs = raw.outputs
        broken_ids: set[str] = set()
    else:
        if not isinstance(raw, dict):
            issues.add("invalid_definition", "a workflow definition must be a JSON object")
            return _report(issues, None)
        raw_nodes, raw_edges = raw.get("nodes"), raw.get("edges")
        if isinstance(raw_nodes, list) and len(raw_nodes) > max_nodes:
            issues.add(
                "too_many_nodes",
                f"{len(raw_nodes)} nodes; at most {max_nodes} allowed",
                field="nodes",
            )
        if isinstance(raw_edges, list) and len(raw_edges) > max_edges:
            issues.add(
                "too_many_edges",
                f"{len(raw_edges)} edges; at most {max_edges} allowed",
                field="edges",
            )
        _add_nul_issues(issues, raw)
        if issues.errors:
            return _report(issues, None)
        try:
            definition = WorkflowDefinition.model_validate(raw)
        except ValidationError as exc:
            definition = None
            _add_model_errors(issues, exc, raw)
        if definition is not None:
            nodes = list(enumerate(definition.nodes))
            # the edges' positions as a range: 209,000 (index, edge) pairs built only to be
            # taken apart again cost ~0.035 s at 100,000 nodes
            edge_raw, edge_models = list(range(len(definition.edges))), list(definition.edges)
            inputs, outputs, broken_ids = definition.inputs, definition.outputs, set()
        else:
            nodes, edges, inputs, outputs, broken_ids = _salvage(raw)
            edge_raw, edge_models = [i for i, _ in edges], [edge for _, edge in edges]

    checker = _Checker(
        issues, node_types, nodes, edge_raw, edge_models, inputs, outputs, broken_ids
    )
    checker.tools, checker.tools_unavailable = tools, tools_unavailable
    checker.on_failure = definition.on_failure if definition is not None else None
    checker.run()
    if issues.errors or definition is None:
        return _report(issues, definition)
    return _report(issues, definition, checker.graph(definition))


def _add_nul_issues(issues: _Issues, raw: dict[str, Any]) -> None:
    """U+0000 cannot be stored (PostgreSQL text and jsonb refuse it): one located error per
    string or key that holds it. The scan is one C-speed encode unless there is one."""
    with contextlib.suppress(Exception):
        encoded = jsonutil.dumps(raw)
        # a NUL is encoded escaped: without a backslash (one memchr, ~0.6 ms for the 19 MB
        # of a 100,000-node definition) there is none; the 6-byte search (~14 ms) only then
        if b"\\" not in encoded or b"\\u0000" not in encoded:
            return
    stack: list[tuple[tuple[Any, ...], Any]] = [((), raw)]
    found: list[tuple[Any, ...]] = []
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                found.append(path)
        elif isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in str(key):
                    found.append((*path, str(key).replace("\x00", "\\u0000")))
                stack.append(((*path, key), child))
        elif isinstance(item, list):
            stack.extend(((*path, index), child) for index, child in enumerate(item))
    for path in reversed(found):
        issues.add(
            "nul_character",
            "the NUL character (U+0000) is not allowed in a workflow definition",
            field=_pointer("", path),
        )


def _report(
    issues: _Issues,
    definition: WorkflowDefinition | None,
    graph: DefinitionGraph | None = None,
) -> ValidationReport:
    valid = not issues.errors
    return ValidationReport(
        valid=valid,
        errors=issues.errors,
        warnings=issues.warnings,
        definition=definition if valid else None,
        graph=graph if valid else None,
    )


def _add_model_errors(issues: _Issues, exc: ValidationError, raw: dict[str, Any]) -> None:
    found = raw.get("nodes")
    raw_nodes: list[Any] = found if isinstance(found, list) else []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        node_id: str | None = None
        edge: int | None = None
        if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int):
            item = raw_nodes[loc[1]] if loc[1] < len(raw_nodes) else None
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                node_id = item["id"]
        elif len(loc) >= 2 and loc[0] == "edges" and isinstance(loc[1], int):
            edge = loc[1]
        field = _pointer("", loc)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = f"unknown field '{loc[-1]}'"
        elif error["type"] == "dict_type" and edge is not None and len(loc) == 2:
            message = _NOT_AN_EDGE  # as when edges were models
        issues.add("invalid_field", f"{field}: {message}", node_id=node_id, edge=edge, field=field)


def _salvage(
    raw: dict[str, Any],
) -> tuple[
    list[tuple[int, NodeSpec]],
    list[tuple[int, EdgeSpec]],
    dict[str, InputSpec],
    dict[str, Any] | None,
    set[str],
]:
    """The parts of an invalid document that parse, so graph rules can still be checked."""
    nodes: list[tuple[int, NodeSpec]] = []
    broken: set[str] = set()
    raw_nodes = raw.get("nodes")
    for index, item in enumerate(raw_nodes if isinstance(raw_nodes, list) else []):
        try:
            nodes.append((index, NodeSpec.model_validate(item)))
        except ValidationError:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                broken.add(item["id"])
    edges: list[tuple[int, EdgeSpec]] = []
    raw_edges = raw.get("edges")
    for index, item in enumerate(raw_edges if isinstance(raw_edges, list) else []):
        with contextlib.suppress(ValidationError):
            edges.append((index, _EDGE.validate_python(item)))
    inputs: dict[str, InputSpec] = {}
    raw_inputs = raw.get("inputs")
    for name, item in (raw_inputs if isinstance(raw_inputs, dict) else {}).items():
        try:
            inputs[str(name)] = InputSpec.model_validate(item)
        except ValidationError:
            inputs[str(name)] = InputSpec()  # declared, even if badly: don't cascade
    raw_outputs = raw.get("outputs")
    outputs = raw_outputs if isinstance(raw_outputs, dict) else None
    return nodes, edges, inputs, outputs, broken


# --------------------------------------------------------------------------------------
# Graph and catalog rules.


class _Checker:
    def __init__(
        self,
        issues: _Issues,
        node_types: Mapping[str, NodeTypeSpec],
        nodes: list[tuple[int, NodeSpec]],
        edge_raw: list[int],
        edge_models: list[EdgeSpec],
        inputs: Mapping[str, InputSpec],
        outputs: dict[str, Any] | None,
        broken_ids: set[str],
    ) -> None:
        self.issues = issues
        self.node_types = node_types
        self.nodes = nodes
        self.inputs = inputs
        self.outputs = outputs
        self.broken_ids = broken_ids
        self.index: dict[str, int] = {}  # node id -> position in self.nodes (first wins)
        self.node_models = list(map(_SECOND, nodes))
        # per edge: its position in the document, the edge
        self.edge_raw = edge_raw
        self.edge_models = edge_models
        # per edge: its ends' positions (None: no such node) and its source port
        self.edge_source: list[int | None] = []
        self.edge_target: list[int | None] = []
        self.source_ports: list[str | None] = []
        # per node: the edges out of it and into it (positions in self.edge_models), its parents
        self.out_edges: list[list[int]] = [[] for _ in nodes]
        self.in_edges: list[list[int]] = [[] for _ in nodes]
        self.preds: list[list[int]] = [[] for _ in nodes]
        self.order: list[int] = []
        self.node_ids: list[str] = []
        self.specs: list[NodeTypeSpec | None] = []
        self.tools: Mapping[str, Mapping[str, Any]] | None = None
        self.tools_unavailable: str | None = None
        self._namespaces: frozenset[str] | None = None
        self.on_failure: OnFailureSpec | None = None
        # Set by _check_nodes when every id is valid and unique and every type known (its
        # whole-list path): each node's type, and per type its positions and their params.
        self.types: list[str] | None = None
        self.groups: dict[str, tuple[list[int], list[dict[str, Any]]]] = {}

    def graph(self, definition: WorkflowDefinition) -> DefinitionGraph:
        """The checked graph, for the planner (only for a valid definition: every edge has
        both ends, no id repeats, no cycle)."""
        return DefinitionGraph(
            node_ids=self.node_ids,
            index=self.index,
            edges=definition.edges,
            edge_source=cast(list[int], self.edge_source),
            edge_target=cast(list[int], self.edge_target),
            edge_port=self.source_ports,
            out_edges=self.out_edges,
            in_edges=self.in_edges,
            order=self.order,
        )

    def run(self) -> None:
        if not self.nodes and not self.issues.errors:
            self.issues.add("empty_workflow", "a workflow needs at least one node", field="nodes")
        specs = self.specs = self._check_nodes()
        self._check_edges(specs)
        order, components = self._check_cycles()
        self.order = order
        self._check_references(_Ancestors(self.preds, order, components))
        self._check_outputs()
        if self.on_failure is not None:
            self._check_on_failure(self.on_failure)

    def _check_on_failure(self, handler: OnFailureSpec) -> None:
        """The workflow's failure handler: one of a node type or a workflow id, known type,
        valid params, templates that read the error, inputs and nodes only."""
        issues = self.issues
        if (handler.type is None) == (handler.workflow_id is None):
            issues.add(
                "invalid_on_failure",
                "on_failure needs exactly one of 'type' (an inline node) or 'workflow_id' "
                "(a sub-workflow)",
                field="on_failure",
            )
            return
        if handler.workflow_id is not None and handler.params:
            issues.add(
                "invalid_on_failure",
                "on_failure: 'params' belong to an inline node; a sub-workflow takes 'inputs'",
                field="on_failure.params",
            )
        if handler.type is not None and handler.inputs is not None:
            issues.add(
                "invalid_on_failure",
                "on_failure: 'inputs' belong to a sub-workflow; an inline node takes 'params'",
                field="on_failure.inputs",
            )
        if ON_FAILURE_NODE_ID in self.index:
            position = self.index[ON_FAILURE_NODE_ID]
            issues.add(
                "reserved_node_id",
                f"'{ON_FAILURE_NODE_ID}' is the on_failure handler's id; rename this node",
                node_id=ON_FAILURE_NODE_ID,
                field=self._field(position, "id"),
            )
        node = handler.node()
        field_prefix = "on_failure.inputs" if handler.workflow_id is not None else "on_failure"
        spec = self.node_types.get(node.type)
        if spec is None:
            issues.add(
                "unknown_node_type",
                f"on_failure has unknown type '{node.type}'",
                field="on_failure.type",
            )
        else:
            checker = _checker_for(spec)
            for error in checker.errors(node.params) if checker is not None else []:
                where = _pointer("on_failure.params", list(error.absolute_path))
                if handler.workflow_id is not None:
                    where = "on_failure"
                issues.add("invalid_params", f"{where}: {error.message}", field=where)
        for field, value, bare in expression_sources(node):
            info = inspect_templates(value, expression=bare)
            where = (
                f"{field_prefix}{field.removeprefix('params.inputs')}"
                if handler.workflow_id is not None
                else f"on_failure.{field}"
            )
            for message in info.errors:
                issues.add("invalid_expression", message, field=where)
            for name in sorted(info.names):
                if name == "env":
                    issues.add("unsupported_reference", ENV_REFUSED, field=where)
                elif name not in CONTEXT_ROOTS and name != "error" and name not in self.index:
                    issues.add(
                        "unknown_reference",
                        f"on_failure references '{name}', which is neither a node nor one of "
                        "error, inputs, system, secrets",
                        field=where,
                    )

    def _field(self, position: int, rest: str) -> str:
        return f"nodes[{self.nodes[position][0]}].{rest}"

    def _check_nodes(self) -> list[NodeTypeSpec | None]:
        # Whole-list passes through C first (ids, types, specs, the params of each type at
        # once); the per-node rules run only for the nodes that may have something to
        # report, in node order, so the issues come in the order a per-node loop gives.
        models = self.node_models
        ids = self.node_ids = list(map(_NODE_ID, models))
        types = list(map(_NODE_TYPE, models))
        specs = list(map(self.node_types.get, types))
        count = len(ids)
        index = dict(zip(ids, range(count), strict=True))
        checkers: dict[str, _SchemaChecker | None] = {}
        # `None in specs` would compare every spec (a pydantic model: Python __eq__) to None
        unknown = any(map(is_, specs, repeat(None)))
        if len(index) != count or unknown or not _ids_valid(ids):
            self._check_nodes_one_by_one(specs, checkers)
        else:
            self.index = index
            self.types = types
            for position in self._worth_a_look(models, types, specs, checkers):
                raw_index, node = self.nodes[position]
                self._node_rules(position, raw_index, node, specs[position], checkers)
        for position in list(compress(range(count), map(eq, types, repeat(_INPUT_TYPE))))[1:]:
            node = self.nodes[position][1]
            self.issues.add(
                "multiple_input_nodes",
                f"node '{node.id}' is a second 'input' node; a workflow has at most one",
                node_id=node.id,
                field=self._field(position, "type"),
            )
        return specs

    def _worth_a_look(
        self,
        models: list[NodeSpec],
        types: list[str],
        specs: list[NodeTypeSpec | None],
        checkers: dict[str, _SchemaChecker | None],
    ) -> list[int]:
        """The positions, in order, of the nodes whose rules (_node_rules) may report
        something: params that fail the fast check, a missing expression, and every node
        of a type with rules of its own (tools, map, sql)."""
        count = len(types)
        worth: list[int] = []
        all_params = list(map(_NODE_PARAMS, models))
        for node_type in set(types):
            positions = list(compress(range(count), map(eq, types, repeat(node_type))))
            params = list(map(all_params.__getitem__, positions))
            self.groups[node_type] = (positions, params)
            if node_type in _TOOL_TYPES or node_type in (_MAP_TYPE, _SQL_TYPE):
                worth.extend(positions)
                continue
            spec = specs[positions[0]]
            checker = checkers[node_type] = _checker_for(spec) if spec is not None else None
            if checker is not None:
                oks = checker.passes(params)
                if oks is not None:
                    worth.extend(compress(positions, map(not_, oks)))
            if node_type in _EXPRESSION_REQUIRED:
                expressions = list(map(dict.get, params, repeat("expression")))
                if set(map(type, expressions)) != {str} or not all(
                    map(str.strip, cast(list[str], expressions))
                ):
                    worth.extend(positions)  # the rules tell which
        return sorted(set(worth))

    def _check_nodes_one_by_one(
        self, specs: list[NodeTypeSpec | None], checkers: dict[str, _SchemaChecker | None]
    ) -> None:
        """Ids, duplicates and types node by node (some id is wrong or repeats, or a type
        is unknown), with each node's other rules after them."""
        issues = self.issues
        ids_valid = _ids_valid(self.node_ids)
        for position, (raw_index, node) in enumerate(self.nodes):
            problem = None if ids_valid else node_id_problem(node.id)
            if problem is not None:
                issues.add(
                    "invalid_node_id", problem, node_id=node.id, field=f"nodes[{raw_index}].id"
                )
            first = self.index.setdefault(node.id, position)
            if first != position:
                issues.add(
                    "duplicate_node_id",
                    f"duplicate node id '{node.id}' "
                    f"(first defined at nodes[{self.nodes[first][0]}])",
                    node_id=node.id,
                    field=f"nodes[{raw_index}].id",
                )
            spec = specs[position]
            if spec is None:
                issues.add(
                    "unknown_node_type",
                    f"node '{node.id}' has unknown type '{node.type}'",
                    node_id=node.id,
                    field=f"nodes[{raw_index}].type",
                )
            self._node_rules(position, raw_index, node, spec, checkers)

    def _node_rules(
        self,
        position: int,
        raw_index: int,
        node: NodeSpec,
        spec: NodeTypeSpec | None,
        checkers: dict[str, _SchemaChecker | None],
    ) -> None:
        """A node's params, tools, map, sql and expression rules."""
        issues = self.issues
        if spec is not None:
            if node.type in checkers:
                checker = checkers[node.type]
            else:
                checker = checkers[node.type] = _checker_for(spec)
            if checker is not None and (checker.fast is None or not checker.fast(node.params)):
                self._check_params(position, node, checker)
        if node.type in _TOOL_TYPES:
            self._check_tools(f"nodes[{raw_index}].params", node.id, node.type, node.params)
        if node.type == _MAP_TYPE:
            inline = node.params.get("node")
            if isinstance(inline, dict) and isinstance(inline.get("params"), dict):
                self._check_tools(
                    f"nodes[{raw_index}].params.node.params",
                    node.id,
                    inline.get("type"),
                    inline["params"],
                )
        if node.type == _SQL_TYPE and _holds_sql_template(node.params.get("query")):
            # Values reach the database as bound parameters only (no SQL injection).
            issues.add(
                "templated_sql",
                f"sql node '{node.id}': the query may not contain templates ({{{{ }}}} or "
                "{% %}); pass values as bound parameters (:name in the query, "
                "params.parameters.name beside it)",
                node_id=node.id,
                field=f"nodes[{raw_index}].params.query",
            )
        if node.type in _EXPRESSION_REQUIRED:
            expression = node.params.get("expression")
            if not isinstance(expression, str) or not expression.strip():
                issues.add(
                    "missing_expression",
                    f"{node.type} node '{node.id}' needs a non-empty 'expression' param",
                    node_id=node.id,
                    field=f"nodes[{raw_index}].params.expression",
                )

    def _check_params(self, position: int, node: NodeSpec, checker: _SchemaChecker) -> None:
        for error in checker.errors(node.params):
            where = _pointer(self._field(position, "params"), list(error.absolute_path))
            self.issues.add(
                "invalid_params",
                f"{where}: {error.message}",
                node_id=node.id,
                field=where,
            )

    def _check_tools(
        self, where: str, node_id: str, node_type: Any, params: dict[str, Any]
    ) -> None:
        """Tool names of a tool node or an agent, and a tool node's literal arguments."""
        if node_type == "tool":
            given: list[tuple[str, Any]] = [("name", params.get("name"))]
        elif node_type == "agent" and isinstance(params.get("tools"), list):
            given = [(f"tools[{i}]", name) for i, name in enumerate(params["tools"])]
        else:
            return
        # only literal names: a templated one is known at run time
        names: list[tuple[str, str]] = [
            (path, name)
            for path, name in given
            # agent:<id> / workflow:<id> are checked against the tenant's agents and
            # workflows instead (services/workflow/delegation.py tool_problems)
            if type(name) is str and name and not is_templated(name) and not is_delegate(name)
        ]
        if not names:
            return
        tools = self.tools
        if tools is None:
            if self.tools_unavailable:
                self.issues.add(
                    "tools_not_checked",
                    f"node '{node_id}': tool names and arguments were not checked: "
                    f"{self.tools_unavailable}",
                    node_id=node_id,
                    field=f"{where}.{names[0][0]}",
                    warning=True,
                )
            return
        for path, name in names:
            if name in tools:
                continue
            namespace, dot, _ = name.partition(".")
            if dot and namespace not in self._tool_namespaces(tools):
                # An MCP server's tools are listed only while it is connected: one that is
                # down now may be up at run time, which checks again.
                self.issues.add(
                    "unknown_tool",
                    f"{where}.{path}: unknown tool '{name}': no tool of '{namespace}' is "
                    "listed now (an MCP server that is not connected?)",
                    node_id=node_id,
                    field=f"{where}.{path}",
                    warning=True,
                )
                continue
            known = ", ".join(sorted(tools)) or "none"
            self.issues.add(
                "unknown_tool",
                f"{where}.{path}: unknown tool '{name}'; the tool service has: {known}",
                node_id=node_id,
                field=f"{where}.{path}",
            )
        name = names[0][1]
        arguments = params.get("arguments", {})
        if node_type != "tool" or name not in tools or not isinstance(arguments, dict):
            return  # a templated 'arguments' is only known at run time
        validator = _tool_validator(tools[name])
        if validator is None:
            return
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
        for error in errors:
            if not _literal_error(error):
                continue
            at = _pointer(f"{where}.arguments", list(error.absolute_path))
            self.issues.add(
                "invalid_tool_arguments",
                f"{at}: {error.message} (input schema of tool '{name}')",
                node_id=node_id,
                field=at,
            )

    def _tool_namespaces(self, tools: Mapping[str, Any]) -> frozenset[str]:
        if self._namespaces is None:
            self._namespaces = frozenset(name.partition(".")[0] for name in tools if "." in name)
        return self._namespaces

    def _check_output_fields(
        self, paths: frozenset[tuple[str, ...]], node_id: str | None, where: str
    ) -> None:
        """``{{ a.txt }}`` where node a's output schema is closed and has no ``txt``."""
        index, specs = self.index, self.specs
        for path in paths:
            if len(path) < 2:
                continue
            target = index.get(path[0])
            if target is None or target >= len(specs):
                continue
            spec = specs[target]
            if spec is None:
                continue
            fields = _top_fields(spec)
            if fields is None or (len(path) == 2 and path[1] in fields):
                continue  # open, or the common case: a field the schema names
            source = self.nodes[target][1]
            extra: tuple[str, ...] = ()
            if source.on_error == "continue" and source.default_output is not None:
                # downstream of a failure gets default_output instead
                if not isinstance(source.default_output, dict):
                    continue
                extra = tuple(source.default_output)
            elif source.on_error == "fail_branch":
                extra = ("error",)  # the error port's output
            if path[1] not in extra:
                self._walk_output_schema(path, spec.output_schema, extra, node_id, where)

    def _walk_output_schema(
        self,
        path: tuple[str, ...],
        schema: Any,
        extra: tuple[str, ...],
        node_id: str | None,
        where: str,
    ) -> None:
        subject = f"node {path[0]}"
        for field in path[1:]:
            fields = _closed_fields(schema)
            if fields is None:
                return
            if field not in fields:
                known = [*fields, *(f for f in extra if f not in fields)]
                self.issues.add(
                    "unknown_output_field",
                    f"{where}: {subject} has no output field {field}; it has: "
                    f"{', '.join(known) or 'none'}",
                    node_id=node_id,
                    field=where,
                )
                return
            schema = schema["properties"][field]
            subject = f"field {field} of {subject}"
            extra = ()

    def _check_edges(self, specs: list[NodeTypeSpec | None]) -> None:
        # Whole-list passes through C first (map, zip, set, compress): at 200,000 edges a
        # Python-level pass over the models costs 20-60 ms; the per-edge loop runs only
        # when an edge names no node, and the duplicate and port checks only on the edges
        # that may have something to report.
        issues = self.issues
        index = self.index
        edges = self.edge_models
        count = len(edges)
        sources = list(map(_SOURCE, edges))
        targets = list(map(_TARGET, edges))
        source_ports = self.source_ports = list(map(_SOURCE_PORT, edges))
        target_ports = list(map(_TARGET_PORT, edges))
        edge_source = self.edge_source = list(map(index.get, sources))
        edge_target = self.edge_target = list(map(index.get, targets))
        raw = self.edge_raw
        error_edges: set[int] = set()
        out_edges, in_edges, preds = self.out_edges, self.in_edges, self.preds
        for e, source, target in zip(range(count), edge_source, edge_target, strict=True):
            if source is not None and target is not None:
                out_edges[source].append(e)
                in_edges[target].append(e)
                preds[target].append(source)
        if None in edge_source or None in edge_target:
            # an edge without both ends: the edges in order, as they come
            seen: dict[tuple[str, str | None, str, str | None], int] = {}
            for e, (raw_index, edge) in enumerate(zip(raw, edges, strict=True)):
                source, target = edge_source[e], edge_target[e]
                if source is None or target is None:
                    self._dangling(raw_index, edge)
                    continue
                key = (sources[e], source_ports[e], targets[e], target_ports[e])
                first = seen.setdefault(key, raw_index)
                if first != raw_index:
                    issues.add(
                        "duplicate_edge",
                        f"edges[{raw_index}] repeats edges[{first}]",
                        edge=raw_index,
                        warning=True,
                    )
                if source_ports[e] is not None or target_ports[e] is not None:
                    self._check_ports(raw_index, edge, source, target, specs, error_edges)
        else:
            # no two edges between the same nodes (a set per node's parents: ~6x quicker
            # than a set of 200,000 keys), or the keys tell which repeat
            if sum(map(len, map(set, preds))) != count:
                keys = list(zip(sources, source_ports, targets, target_ports, strict=True))
                firsts: dict[tuple[str, str | None, str, str | None], int] = {}
                for e, key in enumerate(keys):
                    first = firsts.setdefault(key, raw[e])
                    if first != raw[e]:
                        issues.add(
                            "duplicate_edge",
                            f"edges[{raw[e]}] repeats edges[{first}]",
                            edge=raw[e],
                            warning=True,
                        )
            ported = set(compress(range(count), map(is_not, source_ports, repeat(None))))
            ported.update(compress(range(count), map(is_not, target_ports, repeat(None))))
            ends = cast(list[int], edge_source), cast(list[int], edge_target)  # all resolved
            for e in sorted(ported):
                self._check_ports(raw[e], edges[e], ends[0][e], ends[1][e], specs, error_edges)
        if "fail_branch" not in map(_ON_ERROR, self.node_models):
            return
        for position, (raw_index, node) in enumerate(self.nodes):
            if node.on_error == "fail_branch" and position not in error_edges:
                issues.add(
                    "unrouted_error_port",
                    f"node '{node.id}' has on_error 'fail_branch' but no edge leaves its "
                    "'error' port, so its failures are silently dropped",
                    node_id=node.id,
                    field=f"nodes[{raw_index}].on_error",
                    warning=True,
                )

    def _dangling(self, raw_index: int, edge: EdgeSpec) -> None:
        for end, node_id in (("source", edge["source"]), ("target", edge["target"])):
            if node_id not in self.index and node_id not in self.broken_ids:
                self.issues.add(
                    "dangling_edge",
                    f"edges[{raw_index}].{end} '{node_id}' is not a node",
                    edge=raw_index,
                    field=f"edges[{raw_index}].{end}",
                )

    def _check_ports(
        self,
        raw_index: int,
        edge: EdgeSpec,
        source: int,
        target: int,
        specs: list[NodeTypeSpec | None],
        error_edges: set[int],
    ) -> None:
        source_node = self.nodes[source][1]
        source_spec, target_spec = specs[source], specs[target]
        port = edge.get("source_port")
        source_id, target_id = edge["source"], edge["target"]
        target_port = edge.get("target_port")
        if port == ERROR_PORT:
            if source_node.on_error == "fail_branch":
                error_edges.add(source)
            else:
                self.issues.add(
                    "unknown_port",
                    f"edges[{raw_index}] leaves the 'error' port of '{source_id}', which "
                    f"only exists with on_error 'fail_branch' (it is '{source_node.on_error}')",
                    node_id=source_id,
                    edge=raw_index,
                    field=f"edges[{raw_index}].source_port",
                )
        elif port is not None and source_spec is not None:
            ports = source_spec.ports_for(source_node.params)
            if port not in ports:
                self.issues.add(
                    "unknown_port",
                    f"edges[{raw_index}]: '{source_id}' ({source_node.type}) has no output port "
                    f"'{port}'; it has {', '.join(repr(p) for p in ports) or 'none'}",
                    node_id=source_id,
                    edge=raw_index,
                    field=f"edges[{raw_index}].source_port",
                )
        if target_port is not None and target_spec is not None:
            target_ports = [*target_spec.input_ports, *target_spec.list_input_ports]
            if target_port not in target_ports:
                target_node = self.nodes[target][1]
                self.issues.add(
                    "unknown_port",
                    f"edges[{raw_index}]: '{target_id}' ({target_node.type}) has no input port "
                    f"'{target_port}'; it has "
                    f"{', '.join(repr(p) for p in target_ports) or 'none'}",
                    node_id=target_id,
                    edge=raw_index,
                    field=f"edges[{raw_index}].target_port",
                )

    def _check_cycles(self) -> tuple[list[int], list[list[int]]]:
        """Kahn's order of the acyclic part, and the strongly connected components of the
        rest (in reverse topological order); each cyclic component is reported once."""
        count = len(self.nodes)
        out_edges = self.out_edges
        # only edges with both ends are in out_edges: their targets are positions
        edge_target = cast(list[int], self.edge_target)
        order, indegree = kahn_order(self.in_edges, out_edges, edge_target)
        components: list[list[int]] = []
        if len(order) < count:
            succs = [[edge_target[e] for e in out] for out in out_edges]
            stuck = [v for v in range(count) if indegree[v] > 0]
            components = _strongly_connected(stuck, succs)
            for component in components:
                cycle = _cycle_in(component, succs)
                if not cycle:
                    continue
                ids = [self.nodes[v][1].id for v in cycle]
                self.issues.add(
                    "cycle",
                    "cycle: " + " -> ".join([*ids, ids[0]]),
                    node_id=ids[0],
                    field=self._field(cycle[0], "id"),
                )
        return order, components

    def _check_references(self, ancestors: _Ancestors) -> None:
        # expression_sources() inlined (same fields, same order): a generator per node, and
        # a field path built for every param, cost more than the check itself at 100,000
        # nodes; a plain string without "{" that is not an expression holds no template.
        index = self.index
        unique = len(index) == len(self.nodes)  # no duplicate: skip the lookup per node
        nodes = self.nodes
        positions: Iterable[int] = range(len(nodes))
        if self.types is not None and len(nodes) >= _BULK_REFERENCES:
            positions = self._references_worth_a_look()
        for position in positions:
            raw_index, node = nodes[position]
            if not unique and index.get(node.id) != position:
                continue  # a duplicate: its references would be reported twice
            node_type = node.type
            bare_keys = BARE_EXPRESSION_PARAMS.get(node_type, _NO_KEYS)
            literal = LITERAL_PARAMS.get(node_type, _NO_KEYS)
            for key, value in node.params.items():
                if key in literal:
                    continue
                bare = key in bare_keys
                if not bare and type(value) is str and "{" not in value:
                    continue
                info = inspect_templates(value, expression=bare)
                if info.names or info.errors:
                    where = f"nodes[{raw_index}].params.{key}"
                    self._node_references(position, node.id, where, info, ancestors)
            if node.when is not None:
                info = inspect_templates(node.when, expression=True)
                if info.names or info.errors:
                    where = f"nodes[{raw_index}].when"
                    self._node_references(position, node.id, where, info, ancestors)
            if node.default_output is not None:
                info = inspect_templates(node.default_output)
                if info.names or info.errors:
                    where = f"nodes[{raw_index}].default_output"
                    self._node_references(position, node.id, where, info, ancestors)

    def _references_worth_a_look(self) -> list[int]:
        """The positions, in order, of the nodes whose references _check_references must
        look at one by one (they may have something to report), decided in whole-list
        passes (only after _check_nodes' whole-list path: ids valid and unique, types
        known). The templates of the commonest kind (text and ``{{ a.b }}`` blocks) are
        read all at once (expressions.dotted_paths), the others through inspect_templates
        as the per-node check reads them; then each name must be a quiet context root or a
        direct parent (else the per-node check asks the ancestors), each path into a node
        with a closed output schema must name one of its fields, and each ``inputs.x`` a
        declared input. At 100,000 nodes the per-node loop cost ~8 us a templated node."""
        look: set[int] = set()
        # per path read: the node reading it, its root, the rest (as written: ".b.c", or
        # as segments)
        owners: list[int] = []
        roots: list[str] = []
        rests: list[str | tuple[str, ...]] = []

        def note(position: int, info: TemplateInfo) -> None:
            if info.errors:
                look.add(position)
            for name in info.names:  # each name, read as a path of its own
                owners.append(position)
                roots.append(name)
                rests.append(())
            for path in info.paths:
                owners.append(position)
                roots.append(path[0])
                rests.append(path[1:])

        def read(positions: list[int], values: list[Any], bare: bool) -> None:
            if not set(map(type, values)) <= {str, type(None)}:
                for position, value in zip(positions, values, strict=True):
                    if type(value) is not str and value is not None:
                        note(position, inspect_templates(value, expression=bare))
                strings = list(map(is_, map(type, values), repeat(str)))
                positions = list(compress(positions, strings))
                values = list(compress(values, strings))
            braced = list(map(str.__contains__, values, repeat("{")))
            parts = [(compress(positions, braced), compress(values, braced), False)]
            if bare:  # without a '{', an expression of its own
                unbraced = list(map(not_, braced))
                parts.append((compress(positions, unbraced), compress(values, unbraced), True))
            for part_positions, part_values, as_bare in parts:
                at, sources = list(part_positions), list(part_values)
                dotted, blocks, found_roots, found_rests = dotted_paths(sources, as_bare)
                for i in compress(range(len(sources)), map(not_, dotted)):
                    note(at[i], inspect_templates(sources[i], expression=bare))
                owners.extend(map(at.__getitem__, blocks))
                roots.extend(found_roots)
                rests.extend(found_rests)

        for node_type, (positions, params) in self.groups.items():
            literal = LITERAL_PARAMS.get(node_type, _NO_KEYS)
            bare_keys = BARE_EXPRESSION_PARAMS.get(node_type, _NO_KEYS)
            for key in set(chain.from_iterable(params)) - literal:
                read(positions, list(map(dict.get, params, repeat(key))), key in bare_keys)
        models = self.node_models
        for getter, bare in ((_NODE_WHEN, True), (_NODE_DEFAULT_OUTPUT, False)):
            values = list(map(getter, models))
            if values.count(None) != len(values):  # usually none is given
                given = list(map(is_not, values, repeat(None)))
                read(list(compress(range(len(values)), given)), list(compress(values, given)), bare)

        count = len(models)
        targets = list(map(self.index.get, roots, repeat(count)))  # count: not a node
        # a name is settled as a quiet root, or as a direct parent (not the node itself)
        parents = map(list.__contains__, map(self.preds.__getitem__, owners), targets)
        settled = map(
            or_, map(_QUIET_ROOTS.__contains__, roots), map(and_, parents, map(ne, targets, owners))
        )
        look.update(compress(owners, map(not_, settled)))
        # the fields read of each kind of node, the inputs read
        types = [*cast(list[str], self.types), None]
        kinds = list(map(types.__getitem__, targets))
        unknown = {
            (kind, rest)
            for kind, rest in set(zip(kinds, rests, strict=True))
            if kind is not None and rest and self._unknown_field(kind, _segments(rest))
        }
        if unknown:
            look.update(compress(owners, map(unknown.__contains__, zip(kinds, rests, strict=True))))
        inputs = list(map(eq, roots, repeat("inputs")))
        declared = self.inputs
        undeclared = {
            rest
            for rest in set(compress(rests, inputs))
            if rest and _segments(rest)[0] not in declared
        }
        if undeclared:
            look.update(compress(owners, map(and_, inputs, map(undeclared.__contains__, rests))))
        return sorted(look)

    def _unknown_field(self, node_type: str, rest: tuple[str, ...]) -> bool:
        """Whether a path ``node.<rest>`` into a node of this type may name no field of its
        output (its schema is closed and does not name it): _check_output_fields tells."""
        fields = _top_fields(self.node_types[node_type])
        return fields is not None and not (len(rest) == 1 and rest[0] in fields)

    def _node_references(
        self, position: int, node_id: str, where: str, info: TemplateInfo, ancestors: _Ancestors
    ) -> None:
        issues = self.issues
        index = self.index
        for message in info.errors:
            issues.add("invalid_expression", message, node_id=node_id, field=where)
        names = info.names
        if len(names) > 1:
            # the names in order only when one of them is reported (usually none is)
            for name in names:
                if name in CONTEXT_ROOTS:
                    if name == "env":
                        break
                    continue
                target = index.get(name)
                if (
                    target is None
                    or target == position
                    or not ancestors.is_ancestor(target, position)
                ):
                    break
            else:
                names = frozenset()  # all checked, none to report
        for name in sorted(names) if len(names) > 1 else names:
            if name == "env":
                issues.add("unsupported_reference", ENV_REFUSED, node_id=node_id, field=where)
                continue
            if name in CONTEXT_ROOTS:
                continue
            target = index.get(name)
            if target is None:
                if name not in self.broken_ids:
                    issues.add(
                        "unknown_reference",
                        f"node '{node_id}' references '{name}', which is neither a "
                        "node nor one of inputs, system, secrets",
                        node_id=node_id,
                        field=where,
                    )
            elif target == position:
                issues.add(
                    "self_reference",
                    f"node '{node_id}' references its own output",
                    node_id=node_id,
                    field=where,
                )
            elif not ancestors.is_ancestor(target, position):
                issues.add(
                    "reference_not_upstream",
                    f"node '{node_id}' references '{name}', which is not upstream of "
                    f"it; add an edge path from '{name}' to '{node_id}'",
                    node_id=node_id,
                    field=where,
                )
        if "inputs" in info.names:
            self._check_input_paths(info.paths, self.inputs, node_id, where)
        self._check_output_fields(info.paths, node_id, where)

    def _check_input_paths(
        self,
        paths: frozenset[tuple[str, ...]],
        declared: Mapping[str, InputSpec],
        node_id: str | None,
        where: str,
    ) -> None:
        for path in paths:
            if len(path) < 2 or path[0] != "inputs" or path[1] in declared:
                continue
            if declared:
                self.issues.add(
                    "undeclared_input",
                    f"'inputs.{path[1]}' is not a declared input "
                    f"(declared: {', '.join(sorted(declared))})",
                    node_id=node_id,
                    field=where,
                )
            else:
                self.issues.add(
                    "undeclared_input",
                    f"'inputs.{path[1]}' is used but the workflow declares no inputs",
                    node_id=node_id,
                    field=where,
                    warning=True,
                )

    def _check_outputs(self) -> None:
        if not self.outputs:
            return
        for key, value in self.outputs.items():
            where = _pointer("outputs", [key])
            info = inspect_templates(value)
            for message in info.errors:
                self.issues.add("invalid_expression", message, field=where)
            for name in sorted(info.names):
                if name == "env":
                    self.issues.add("unsupported_reference", ENV_REFUSED, field=where)
                elif name not in CONTEXT_ROOTS and name not in self.index:
                    self.issues.add(
                        "unknown_reference",
                        f"output '{key}' references '{name}', which is not a node",
                        field=where,
                    )
            self._check_input_paths(info.paths, self.inputs, None, where)
            self._check_output_fields(info.paths, None, where)


class _Ancestors:
    """Answers "is u upstream of v" with ancestor bitsets (Python ints). In a DAG they are
    built lazily, only for the nodes asked about, and a direct-parent shortcut settles most
    template references without any. A cyclic graph (already reported) gets them eagerly
    over its condensation so that the cost stays linear in the number of edges."""

    def __init__(
        self, preds: list[list[int]], order: list[int], components: list[list[int]]
    ) -> None:
        self.preds = preds
        self.memo: dict[int, int] = {}
        if components:
            self._condensed(order, components)

    def is_ancestor(self, u: int, v: int) -> bool:
        if u in self.preds[v]:
            return True
        return bool(self._bits(v) >> u & 1)

    def _bits(self, v: int) -> int:
        memo, preds = self.memo, self.preds
        if v in memo:
            return memo[v]
        stack = [v]
        while stack:
            w = stack[-1]
            if w in memo:
                stack.pop()
                continue
            missing = [p for p in preds[w] if p not in memo]
            if missing:
                stack.extend(missing)
                continue
            bits = 0
            for p in preds[w]:
                bits |= memo[p] | (1 << p)
            memo[w] = bits
            stack.pop()
        return memo[v]

    def _condensed(self, order: list[int], components: list[list[int]]) -> None:
        memo, preds = self.memo, self.preds
        for v in order:
            bits = 0
            for p in preds[v]:
                bits |= memo[p] | (1 << p)
            memo[v] = bits
        # Tarjan emits components after everything they reach: reversed is topological
        for component in reversed(components):
            members = set(component)
            bits = 0
            for w in component:
                for p in preds[w]:
                    bits |= 1 << p
                    if p not in members:
                        bits |= memo[p]
            for w in component:
                memo[w] = bits


def _strongly_connected(vertices: list[int], succs: list[list[int]]) -> list[list[int]]:
    """Tarjan's algorithm, iterative, restricted to ``vertices``."""
    allowed = set(vertices)
    index_of: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    components: list[list[int]] = []
    counter = 0
    for root in vertices:
        if root in index_of:
            continue
        work = [(root, 0)]
        while work:
            v, i = work[-1]
            if i == 0:
                index_of[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            targets = succs[v]
            while i < len(targets) and (targets[i] not in allowed):
                i += 1
            if i < len(targets):
                w = targets[i]
                work[-1] = (v, i + 1)
                if w not in index_of:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index_of[w])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
            if low[v] == index_of[v]:
                component: list[int] = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                components.append(component)
    return components


def _cycle_in(component: list[int], succs: list[list[int]]) -> list[int]:
    """One elementary cycle through a strongly connected component, in edge order."""
    members = set(component)
    start = min(component)
    if len(component) == 1:
        return [start] if start in succs[start] else []
    # BFS inside the component from start back to start gives a shortest cycle
    parent: dict[int, int] = {}
    frontier = [start]
    while frontier:
        following: list[int] = []
        for v in frontier:
            for w in succs[v]:
                if w not in members:
                    continue
                if w == start:
                    cycle = [v]
                    while cycle[-1] != start:
                        cycle.append(parent[cycle[-1]])
                    return list(reversed(cycle))
                if w not in parent:
                    parent[w] = v
                    following.append(w)
        frontier = following
    return []
