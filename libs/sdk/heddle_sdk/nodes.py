"""`@node_type`: a typed Python function becomes a custom node type with JSON Schemas.

The function's parameters say what the node takes:

- a parameter annotated `Context` receives the attempt's context (logs, secrets, progress);
- a parameter named `params` annotated with a pydantic model: the node's params;
- a parameter named `inputs`: what arrives on the node's input ports, `{port: value}`
  (a pydantic model's fields are the ports);
- any other parameter is one param, described by its type hint and default.

The return annotation describes the output. An output that is not a JSON object (a `str`, a
`list`...) is wrapped as `{"result": value}`, so that downstream nodes can reference
`{{ node.result }}`. Schemas come from pydantic (`TypeAdapter.json_schema`), so the catalog,
validation and the console's param forms treat the type exactly like a built-in one.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import inspect
import re
import types
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar, cast

import pydantic
import pydantic_core
from pydantic import BaseModel, ConfigDict, TypeAdapter

from heddle_sdk.context import Context

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

DEFAULT_INPUT_PORT = "in"
DEFAULT_OUTPUT_PORT = "out"
#: Dot-namespaced, like "acme.slugify": built-in types have no dot, so names never collide.
TYPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)+$")
PORT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class NodeError(Exception):
    """A failure of a node function that the engine reports as the node's error.

    `retryable=False` says a retry cannot help (bad input, a refused request): the node fails
    at once whatever its retry policy. Any other exception is retryable."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        type: str = "NodeError",
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.type = type
        self.details = details


@dataclass(frozen=True)
class Routed(Generic[T]):
    """Return `Routed(value, ports=["approved"])` to activate only some output ports (the
    others' downstream is skipped, as after a condition)."""

    value: T
    ports: Sequence[str]


@dataclass(frozen=True)
class Result:
    """What one invocation produced: the output object and the ports it activates (None:
    every port)."""

    output: dict[str, Any]
    ports: list[str] | None = None


def _is_model(annotation: Any) -> bool:
    return inspect.isclass(annotation) and issubclass(annotation, BaseModel)


def _unwrap_routed(annotation: Any) -> Any:
    if typing.get_origin(annotation) is Routed:
        args = typing.get_args(annotation)
        return args[0] if args else Any
    if annotation is Routed:
        return Any
    return annotation


def _is_object_schema(schema: Mapping[str, Any]) -> bool:
    if schema.get("type") == "object":
        return True
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
        return isinstance(target, Mapping) and target.get("type") == "object"
    return False


@dataclass
class NodeType(Generic[P, R]):
    """A custom node type: its name and palette entry, its schemas, and the function.

    Calling it calls the function, so decorated functions stay unit-testable."""

    type: str
    title: str
    category: str
    description: str
    version: str
    function: Callable[P, R]
    params_model: builtins.type[BaseModel]
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any]
    input_ports: list[str]
    list_input_ports: list[str]
    output_ports: list[str]
    is_async: bool = False
    _context_param: str | None = None
    _params_param: str | None = None
    _inputs_param: str | None = None
    _inputs_adapter: TypeAdapter[Any] | None = None
    _output_adapter: TypeAdapter[Any] | None = None
    _wrap_output: bool = False
    _loose_params: list[str] = field(default_factory=list)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.function(*args, **kwargs)

    @property
    def params_schema(self) -> dict[str, Any]:
        """JSON Schema (draft 2020-12) of the node's params."""
        return self.params_model.model_json_schema()

    def spec(self) -> dict[str, Any]:
        """The type as the catalog lists it (the shape of GET /api/v1/node-types)."""
        spec: dict[str, Any] = {
            "type": self.type,
            "version": self.version,
            "title": self.title,
            "description": self.description,
            "category": self.category,
            "params_schema": self.params_schema,
            "output_schema": self.output_schema,
            "input_ports": list(self.input_ports),
            "list_input_ports": list(self.list_input_ports),
            "output_ports": list(self.output_ports),
        }
        if self.input_schema is not None:
            spec["input_schema"] = self.input_schema
        return spec

    async def invoke(
        self,
        params: Mapping[str, Any],
        inputs: Mapping[str, Any],
        context: Context,
        *,
        executor: Executor | None = None,
    ) -> Result:
        """Validate params and inputs, run the function (a plain def in executor's thread),
        and turn its return value into the node's output.

        Params or inputs that break the schemas raise a non-retryable NodeError."""
        try:
            params_value = self.params_model.model_validate(dict(params))
        except pydantic.ValidationError as error:
            raise NodeError(
                f"params of {self.type} are invalid: {_first_error(error)}",
                retryable=False,
                type="InvalidParams",
                details=error.errors(include_url=False, include_context=False),
            ) from None
        kwargs: dict[str, Any] = {}
        if self._params_param is not None:
            kwargs[self._params_param] = params_value
        for name in self._loose_params:
            kwargs[name] = getattr(params_value, name)
        if self._inputs_param is not None:
            assert self._inputs_adapter is not None
            try:
                kwargs[self._inputs_param] = self._inputs_adapter.validate_python(dict(inputs))
            except pydantic.ValidationError as error:
                raise NodeError(
                    f"inputs of {self.type} are invalid: {_first_error(error)}",
                    retryable=False,
                    type="InvalidInputs",
                    details=error.errors(include_url=False, include_context=False),
                ) from None
        if self._context_param is not None:
            kwargs[self._context_param] = context
        function = cast(Callable[..., Any], self.function)
        if self.is_async:
            value = await cast(Awaitable[Any], function(**kwargs))
        else:
            loop = asyncio.get_running_loop()
            value = await loop.run_in_executor(executor, functools.partial(function, **kwargs))
        return self._result(value)

    def _result(self, value: Any) -> Result:
        ports: list[str] | None = None
        if isinstance(value, Routed):
            ports = [str(port) for port in value.ports]
            unknown = [port for port in ports if port not in self.output_ports]
            if unknown:
                raise NodeError(
                    f"{self.type} routed to unknown ports {unknown}; it has {self.output_ports}",
                    retryable=False,
                    type="InvalidOutput",
                )
            value = value.value
        try:
            if self._output_adapter is not None:
                dumped = self._output_adapter.dump_python(value, mode="json", warnings="error")
            else:
                dumped = pydantic.TypeAdapter(Any).dump_python(value, mode="json")
        except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as error:
            raise NodeError(
                f"{self.type} returned a value its return annotation does not describe: {error}",
                retryable=False,
                type="InvalidOutput",
            ) from None
        if self._wrap_output:
            dumped = {"result": dumped}
        elif dumped is None:
            dumped = {}
        elif not isinstance(dumped, dict):
            raise NodeError(
                f"{self.type} must return an object (a dict or a model), not "
                f"{type(dumped).__name__}; annotate the return type to have it wrapped",
                retryable=False,
                type="InvalidOutput",
            )
        return Result(dumped, ports)


def _first_error(error: pydantic.ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def node_type(
    type: str,
    *,
    title: str | None = None,
    category: str = "custom",
    description: str | None = None,
    version: str = "1",
    input_ports: Iterable[str] | None = None,
    list_input_ports: Iterable[str] = (),
    output_ports: Iterable[str] = (DEFAULT_OUTPUT_PORT,),
) -> Callable[[Callable[P, R]], NodeType[P, R]]:
    """Declare a custom node type served by a worker.

    ```
    @node_type("acme.slugify", title="Slugify", category="text")
    def slugify(text: str, separator: str = "-") -> str: ...
    ```

    `description` defaults to the function's docstring. `input_ports` defaults to the fields
    of an `inputs` model, else `["in"]`; a port in `list_input_ports` receives every incoming
    edge's value as a list (in edge order). Raises TypeError for a signature it cannot
    describe and ValueError for a bad type or port name.
    """
    if not TYPE_NAME.match(type):
        raise ValueError(
            f"custom node type names are namespaced with a dot, like 'acme.slugify': {type!r}"
        )

    def decorate(function: Callable[P, R]) -> NodeType[P, R]:
        return _describe(
            function,
            type=type,
            title=title,
            category=category,
            description=description,
            version=version,
            input_ports=input_ports,
            list_input_ports=list_input_ports,
            output_ports=output_ports,
        )

    return decorate


def _describe(
    function: Callable[P, R],
    *,
    type: str,
    title: str | None,
    category: str,
    description: str | None,
    version: str,
    input_ports: Iterable[str] | None,
    list_input_ports: Iterable[str],
    output_ports: Iterable[str],
) -> NodeType[P, R]:
    where = f"@node_type({type!r}) on {getattr(function, '__qualname__', function)!r}"
    signature = inspect.signature(function)
    hints = typing.get_type_hints(function, include_extras=True)
    context_param = params_param = inputs_param = None
    inputs_annotation: Any = None
    loose: dict[str, Any] = {}
    for name, parameter in signature.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"{where}: *args and **kwargs cannot be described as params")
        annotation = hints.get(name, Any)
        if inspect.isclass(annotation) and issubclass(annotation, Context):
            context_param = name
        elif name == "params" and _is_model(annotation):
            params_param = name
        elif name == "inputs":
            inputs_param, inputs_annotation = name, annotation
        else:
            default = ... if parameter.default is parameter.empty else parameter.default
            loose[name] = (annotation, default)
    if params_param is not None and loose:
        raise TypeError(
            f"{where}: take either a `params` model or separate params, not both ({list(loose)})"
        )
    if params_param is not None:
        params_model: builtins.type[BaseModel] = hints[params_param]
    else:
        params_model = pydantic.create_model(
            f"{_camel(type)}Params",
            __config__=ConfigDict(extra="forbid"),
            **loose,
        )

    inputs_adapter: TypeAdapter[Any] | None = None
    input_schema: dict[str, Any] | None = None
    ports = list(input_ports) if input_ports is not None else None
    if inputs_param is not None:
        inputs_adapter = TypeAdapter(inputs_annotation)
        input_schema = inputs_adapter.json_schema()
        if ports is None and _is_model(inputs_annotation):
            ports = list(inputs_annotation.model_fields)
    list_ports = list(list_input_ports)
    ports = ports or [DEFAULT_INPUT_PORT]
    ports += [port for port in list_ports if port not in ports]
    outputs = list(output_ports)
    for port in [*ports, *outputs]:
        if not PORT_NAME.match(port):
            raise ValueError(f"{where}: bad port name {port!r}")
    if not outputs:
        raise ValueError(f"{where}: a node type needs at least one output port")

    returned = _unwrap_routed(hints.get("return", Any))
    output_adapter: TypeAdapter[Any] | None = None
    wrap = False
    if returned is Any or returned is None or returned is types.NoneType:
        # Undescribed (a dict is expected) or nothing (an empty output).
        output_schema: dict[str, Any] = {"type": "object"}
    else:
        output_adapter = TypeAdapter(returned)
        output_schema = output_adapter.json_schema(mode="serialization")
        if not _is_object_schema(output_schema):
            wrap = True
            defs = output_schema.pop("$defs", None)
            output_schema = {
                "type": "object",
                "properties": {"result": output_schema},
                "required": ["result"],
                **({"$defs": defs} if defs else {}),
            }
    docstring = inspect.getdoc(function) or ""
    return NodeType(
        type=type,
        title=title or _title(type),
        category=category or "custom",
        description=description if description is not None else docstring.split("\n\n")[0],
        version=str(version),
        function=function,
        params_model=params_model,
        input_schema=input_schema,
        output_schema=output_schema,
        input_ports=ports,
        list_input_ports=list_ports,
        output_ports=outputs,
        is_async=inspect.iscoroutinefunction(function),
        _context_param=context_param,
        _params_param=params_param,
        _inputs_param=inputs_param,
        _inputs_adapter=inputs_adapter,
        _output_adapter=output_adapter,
        _wrap_output=wrap,
        _loose_params=list(loose),
    )


def _title(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1].replace("_", " ").replace("-", " ").capitalize()


def _camel(type_name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[._\-]", type_name) if part)


def collect_node_types(*sources: Any) -> list[NodeType[..., Any]]:
    """The node types among sources: NodeType objects, modules (their NodeType attributes),
    or iterables of either. Raises ValueError when two differ under one name."""
    found: dict[str, NodeType[..., Any]] = {}

    def add(item: Any) -> None:
        if isinstance(item, NodeType):
            existing = found.get(item.type)
            if existing is not None and existing is not item:
                raise ValueError(f"two node types are named {item.type!r}")
            found[item.type] = item
        elif isinstance(item, types.ModuleType):
            for value in vars(item).values():
                if isinstance(value, NodeType):
                    add(value)
        elif isinstance(item, Iterable) and not isinstance(item, str | bytes):
            for each in item:
                add(each)
        else:
            raise TypeError(f"not a node type or a module of them: {item!r}")

    for source in sources:
        add(source)
    return list(found.values())
