"""The program the code node runs in its subprocess: ``python -I -S -B -X utf8 <this file>``.

It is never imported by the service. Arguments: cpu seconds, memory MB, max printed chars.
stdin: {"source": str, "inputs": any}. stdout: one JSON document,
{"ok": true, "result": ..., "stdout": str} or {"ok": false, "error": {"type", "message",
"line"}, "stdout": str}.

The process is the security boundary (resource limits, clean env, empty cwd, no site
packages); the restricted builtins, the module allowlist and the AST check below are
defence in depth that stop the easy escapes (open, os via a module attribute, dunder
walks to the interpreter's internals), not a proof against a determined attacker.
"""

from __future__ import annotations

import ast
import builtins
import json
import resource
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


def check_source(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.alias):
            name = node.attr if isinstance(node, ast.Attribute) else node.name
            blocked = name.startswith("_") or name.rsplit(".", 1)[-1] in BLOCKED_NAMES
        elif isinstance(node, ast.Name):
            # Plain names are the user's own variables (`_` included); only dunders such as
            # __builtins__ or __import__ lead anywhere.
            name = node.id
            blocked = name.startswith("__")
        else:
            continue
        if blocked:
            raise SandboxViolation(f"'{name}' is not allowed", getattr(node, "lineno", None))


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
        return views[top]

    def safe_getattr(obj: Any, name: str, *default: Any) -> Any:
        if not isinstance(name, str) or name.startswith("_") or name in BLOCKED_NAMES:
            raise AttributeError(f"attribute '{name}' is not allowed")
        return getattr(obj, name, *default)

    safe["__import__"] = restricted_import
    safe["getattr"] = safe_getattr
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


def main() -> None:
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
