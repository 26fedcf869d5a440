"""The program the code node runs in its subprocess: ``python -I -S -B -X utf8 <this file>``.

It is never imported by the service. Arguments: cpu seconds, memory MB, max printed chars.
stdin: {"source": str, "inputs": any}. stdout: one JSON document,
{"ok": true, "result": ..., "stdout": str} or {"ok": false, "error": {"type", "message",
"line"}, "stdout": str}. ``--extensions`` instead prints the extension modules the allowed
imports load (the service binds their shared libraries into the jail).

The security boundary is the operating system: code.py runs this file under bubblewrap
(own namespaces, uid 65534, no environment, no network, a read-only filesystem holding only
the stdlib and this file, rlimits). The restricted builtins, the module allowlist and the
AST check below are the first line that stops the easy escapes (open, os via a module
attribute, dunder walks to the interpreter's internals, str.format field access), not a
proof against a determined attacker: a deny-list over Python cannot be complete.
"""

from __future__ import annotations

import _string
import ast
import builtins
import functools
import json
import resource
import string
import sys
import types
from typing import Any

ALLOWED_MODULES = frozenset(
    {
        "json", "math", "re", "datetime", "itertools", "collections", "functools",
        "statistics", "random", "string", "decimal", "fractions", "operator", "textwrap",
        "uuid", "hashlib", "base64",
    }
)  # fmt: skip

SAFE_BUILTINS = (
    "abs", "all", "any", "ascii", "bin", "bool", "bytearray", "bytes", "callable", "chr",
    "classmethod", "complex", "dict", "divmod", "enumerate", "filter", "float", "format",
    "frozenset", "hasattr", "hash", "hex", "id", "int", "isinstance", "issubclass", "iter",
    "len", "list", "map", "max", "min", "next", "object", "oct", "ord", "pow", "print",
    "property", "range", "repr", "reversed", "round", "set", "slice", "sorted",
    "staticmethod", "str", "sum", "super", "tuple", "type", "zip", "__build_class__",
    "NotImplemented", "Ellipsis",
)  # fmt: skip

# Names that hand back objects by a string name or expose frames and code: each one is a
# known way from plain data to the interpreter's internals (and from there to os).
BLOCKED_NAMES = frozenset(
    {
        "attrgetter", "methodcaller", "get_field", "gi_frame", "gi_code", "cr_frame",
        "cr_code", "ag_frame", "ag_code", "f_back", "f_globals", "f_locals", "f_builtins",
        "f_code", "tb_frame", "tb_next", "mro",
    }
)  # fmt: skip

# Attributes that turn a string into attribute access by name ('{0.__class__}'.format(x)):
# reading them through `.`, getattr or a match pattern yields the safe formatter instead.
FORMAT_METHODS = frozenset({"format", "format_map"})
FORMAT_HOOK = "__heddle_format_attr__"

CODE_FILENAME = "<code>"


class SandboxViolation(Exception):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


class BoundedWriter:
    """sys.stdout for the user's prints: keeps the first ``limit`` characters."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False

    def write(self, text: str) -> int:
        room = self.limit - self.size
        if len(text) > room:
            self.truncated = True
            text = text[: max(room, 0)]
        self.parts.append(text)
        self.size += len(text)
        return len(text)

    def flush(self) -> None:
        pass

    def getvalue(self) -> str:
        return "".join(self.parts) + ("\n[output truncated]" if self.truncated else "")


def limit_resources(cpu_s: int, memory_mb: int) -> None:
    memory = memory_mb * 1024 * 1024
    limits = [
        (resource.RLIMIT_CPU, (cpu_s, cpu_s + 1)),
        (resource.RLIMIT_AS, (memory, memory)),
        (resource.RLIMIT_FSIZE, (0, 0)),
        (resource.RLIMIT_NOFILE, (16, 16)),  # imports still need to open module files
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_NPROC, (0, 0)),  # no fork; not enforced for root, hence best effort
    ]
    for kind, value in limits:
        try:
            resource.setrlimit(kind, value)
        except (ValueError, OSError):
            if kind in (resource.RLIMIT_CPU, resource.RLIMIT_AS):
                raise


def blocked_attribute(name: str) -> bool:
    return name.startswith("_") or name.rsplit(".", 1)[-1] in BLOCKED_NAMES


def blocked_name(node: ast.AST) -> str | None:
    """The name in ``node`` that the sandbox refuses, if any."""
    if isinstance(node, ast.Attribute | ast.alias):
        name = node.attr if isinstance(node, ast.Attribute) else node.name
        return name if blocked_attribute(name) else None
    if isinstance(node, ast.MatchClass):
        # `case object(__class__=t)` reads attributes named by plain strings.
        for name in node.kwd_attrs:
            if blocked_attribute(name) or name in FORMAT_METHODS:
                return name
        return None
    # Plain names are the user's own variables (`_` included); only dunders such as
    # __builtins__ or __import__ lead anywhere.
    if isinstance(node, ast.Name):
        return node.id if node.id.startswith("__") else None
    if isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
        return node.name if node.name.startswith("__") else None
    return None


def check_source(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        name = blocked_name(node)
        if name is not None:
            raise SandboxViolation(f"'{name}' is not allowed", getattr(node, "lineno", None))


class FormatHook(ast.NodeTransformer):
    """Rewrites ``x.format`` / ``x.format_map`` (loads) to ``__heddle_format_attr__(x, name)``
    so that str's formatting methods are replaced by SafeFormatter at run time."""

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        if node.attr not in FORMAT_METHODS or not isinstance(node.ctx, ast.Load):
            return node
        hook = ast.Name(FORMAT_HOOK, ast.Load())
        call = ast.Call(hook, [node.value, ast.Constant(node.attr)], [])
        return ast.copy_location(call, node)


class SafeFormatter(string.Formatter):
    """str.format semantics, but a field's attribute names pass the sandbox's getattr."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        first, rest = _string.formatter_field_name_split(field_name)
        obj = self.get_value(first, args, kwargs)
        for is_attr, key in rest:
            obj = checked_getattr(obj, key) if is_attr else obj[key]
        return obj, first


_FORMATTER = SafeFormatter()


def _format(template: str, /, *args: Any, **kwargs: Any) -> str:
    return _FORMATTER.vformat(str(template), args, kwargs)


def _format_map(template: str, mapping: Any, /) -> str:
    return _FORMATTER.vformat(str(template), (), mapping)


_SAFE_METHODS = {"format": _format, "format_map": _format_map}


def safe_format_method(value: Any, name: str) -> Any:
    """What ``value.<name>`` (a format method) is in the sandbox."""
    attribute = getattr(value, name)
    owner = getattr(attribute, "__self__", None)  # bound builtin methods: 'x'.format
    if isinstance(owner, str) and getattr(attribute, "__name__", None) == name:
        return functools.partial(_SAFE_METHODS[name], owner)
    if attribute is getattr(str, name):
        return _SAFE_METHODS[name]  # unbound: str.format(template, ...)
    return attribute


def checked_getattr(obj: Any, name: str, *default: Any) -> Any:
    if not isinstance(name, str) or blocked_attribute(name):
        raise AttributeError(f"attribute '{name}' is not allowed")
    if name in FORMAT_METHODS:
        try:
            return safe_format_method(obj, name)
        except AttributeError:
            if default:
                return default[0]
            raise
    return getattr(obj, name, *default)


def public_view(module: types.ModuleType) -> types.ModuleType:
    """A copy of a module without private names, submodules or blocked helpers, so that
    e.g. uuid.os or random._os cannot be reached."""
    view = types.ModuleType(module.__name__)
    for name in dir(module):
        if name.startswith("_") or name in BLOCKED_NAMES:
            continue
        value = getattr(module, name)
        if not isinstance(value, types.ModuleType):
            setattr(view, name, value)
    return view


def make_builtins() -> dict[str, Any]:
    safe = {name: getattr(builtins, name) for name in SAFE_BUILTINS}
    for name in dir(builtins):
        value = getattr(builtins, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            safe[name] = value
    views: dict[str, types.ModuleType] = {}

    def restricted_import(
        name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> types.ModuleType:
        top = name.split(".", 1)[0]
        if level != 0 or top not in ALLOWED_MODULES:
            raise ImportError(
                f"import of '{name}' is not allowed; allowed: {', '.join(sorted(ALLOWED_MODULES))}"
            )
        if top not in views:
            views[top] = public_view(builtins.__import__(top))
            if top == "string":  # its Formatter resolves field names with plain getattr
                views[top].Formatter = SafeFormatter  # type: ignore[attr-defined]
        return views[top]

    safe["__import__"] = restricted_import
    safe["getattr"] = checked_getattr
    safe[FORMAT_HOOK] = safe_format_method
    return safe


def user_line(exc: BaseException) -> int | None:
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == CODE_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def run(source: str, inputs: Any) -> Any:
    tree = ast.parse(source, CODE_FILENAME)
    check_source(tree)
    tree = ast.fix_missing_locations(FormatHook().visit(tree))
    namespace: dict[str, Any] = {
        "__builtins__": make_builtins(),
        "__name__": "__sandbox__",
        "inputs": inputs,
    }
    exec(compile(tree, CODE_FILENAME, "exec"), namespace)
    main = namespace.get("main")
    if callable(main):
        return main(inputs)
    if "result" not in namespace:
        raise SandboxViolation("set `result = ...` or define `def main(inputs)`", None)
    return namespace["result"]


def error(kind: str, message: str, line: int | None) -> dict[str, Any]:
    return {"ok": False, "error": {"type": kind, "message": message, "line": line}}


def execute(source: str, inputs: Any, memory_mb: int) -> dict[str, Any]:
    try:
        result = run(source, inputs)
    except MemoryError:
        return error("MemoryError", f"memory limit of {memory_mb} MB exceeded", None)
    except SyntaxError as exc:
        return error("SyntaxError", f"SyntaxError: {exc.msg}", exc.lineno)
    except SandboxViolation as exc:
        return error("SandboxViolation", str(exc), exc.line)
    except BaseException as exc:  # the user's code may raise anything, SystemExit included
        return error(type(exc).__name__, f"{type(exc).__name__}: {exc}", user_line(exc))
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return error("ResultError", f"result is not JSON-serializable: {exc}", None)
    except MemoryError:
        return error("MemoryError", f"memory limit of {memory_mb} MB exceeded", None)
    return {"ok": True, "result": result}


def loaded_extensions() -> list[str]:
    for name in sorted(ALLOWED_MODULES):
        builtins.__import__(name)
    files = (getattr(module, "__file__", None) for module in list(sys.modules.values()))
    return sorted({file for file in files if file and file.endswith(".so")})


def main() -> None:
    if sys.argv[1:] == ["--extensions"]:
        print(json.dumps(loaded_extensions()))
        return
    cpu_s, memory_mb, max_chars = (int(arg) for arg in sys.argv[1:4])
    real_stdout = sys.stdout
    limit_resources(cpu_s, memory_mb)
    payload = json.loads(sys.stdin.read())
    captured = BoundedWriter(max_chars)
    sys.stdout = captured
    try:
        report = execute(payload["source"], payload.get("inputs"), memory_mb)
    finally:
        sys.stdout = real_stdout
    report["stdout"] = captured.getvalue()
    real_stdout.write(json.dumps(report))
    real_stdout.flush()


if __name__ == "__main__":
    main()
