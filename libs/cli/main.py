"""The `heddle` command: run workflows against a gateway, and start or stop the stack.

    heddle run examples/hello.yaml --input name=Ada
    heddle status <execution-id>
    heddle validate examples/hello.yaml
    heddle serve | up | down | db upgrade

The gateway URL comes from --url, else HEDDLE_URL, else http://127.0.0.1:8080; an API key
from HEDDLE_API_KEY or the file var/dev-api-key is sent as a bearer token.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import httpx
import yaml

DEFAULT_URL = "http://127.0.0.1:8080"
DEV_API_KEY_FILE = Path("var/dev-api-key")
TERMINAL = {"succeeded", "failed", "cancelled"}
YAML_SUFFIXES = {".yaml", ".yml"}
# How often `run` re-opens an event stream the network dropped before the execution ended.
MAX_RECONNECTS = 5


class CliError(Exception):
    """A failure to report in one line on stderr (exit code 1)."""


# --- HTTP -------------------------------------------------------------------------------


def _api_key() -> str | None:
    key = os.environ.get("HEDDLE_API_KEY", "").strip()
    if key:
        return key
    if DEV_API_KEY_FILE.is_file():
        return DEV_API_KEY_FILE.read_text().strip() or None
    return None


def _client(url: str) -> httpx.Client:
    headers = {"user-agent": "heddle-cli"}
    key = _api_key()
    if key:
        headers["authorization"] = f"Bearer {key}"
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30.0)


def _request(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """JSON of a successful response; the gateway's error message otherwise."""
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as error:
        raise CliError(f"cannot reach the gateway at {client.base_url}: {error}") from None
    if response.is_success:
        return response.json() if response.content else None
    try:
        body = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        raise CliError(f"{method} {path}: HTTP {response.status_code}") from None
    message = f"{body.get('code')}: {body.get('message')}"
    details = body.get("details")
    if isinstance(details, dict) and isinstance(details.get("issues"), list):
        details = details["issues"]
    if isinstance(details, list):
        for detail in details:
            if isinstance(detail, dict) and "loc" in detail:  # a field error of the request
                message += f"\n  {detail['loc']}: {detail.get('msg', '')}"
            elif isinstance(detail, dict):  # a validation issue of a definition
                message += f"\n  {_issue_text(detail)}"
    raise CliError(message)


# --- workflow files and inputs ----------------------------------------------------------


def _read_definition(path: str) -> tuple[bytes, str, dict[str, Any]]:
    """The file's bytes, its media type and (for the name) its parsed content."""
    file = Path(path)
    try:
        content = file.read_bytes()
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror}") from None
    is_yaml = file.suffix.lower() in YAML_SUFFIXES
    try:
        parsed = yaml.safe_load(content) if is_yaml else json.loads(content)
    except (yaml.YAMLError, ValueError) as error:
        raise CliError(f"{path}: {error}") from None
    if not isinstance(parsed, dict):
        raise CliError(f"{path}: a workflow definition must be a mapping")
    return content, "application/yaml" if is_yaml else "application/json", parsed


def parse_inputs(pairs: list[str], input_file: str | None) -> dict[str, Any]:
    """--input-file (JSON or YAML mapping) overlaid by each --input k=v (JSON if it parses)."""
    inputs: dict[str, Any] = {}
    if input_file:
        try:
            loaded = yaml.safe_load(Path(input_file).read_text())
        except (OSError, yaml.YAMLError) as error:
            raise CliError(f"cannot read inputs from {input_file}: {error}") from None
        if not isinstance(loaded, dict):
            raise CliError(f"{input_file}: inputs must be a mapping")
        inputs.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--input {pair!r}: expected key=value")
        try:
            inputs[key] = json.loads(raw)
        except ValueError:
            inputs[key] = raw
    return inputs


def _find_workflow(client: httpx.Client, name: str) -> dict[str, Any] | None:
    page = 1
    while True:
        listing = _request(
            client, "GET", "/api/v1/workflows", params={"page": page, "page_size": 200}
        )
        for workflow in listing["items"]:
            if workflow["name"] == name:
                return dict(workflow)
        if page * listing["page_size"] >= listing["total"] or not listing["items"]:
            return None
        page += 1


def _save_workflow(client: httpx.Client, path: str) -> dict[str, Any]:
    """Create the workflow, or save a new version of the one with the same name."""
    content, media_type, parsed = _read_definition(path)
    headers = {"content-type": media_type}
    name = parsed.get("name")
    existing = _find_workflow(client, name) if isinstance(name, str) and name else None
    if existing is None:
        return dict(_request(client, "POST", "/api/v1/workflows", content=content, headers=headers))
    current = _request(client, "GET", f"/api/v1/workflows/{existing['id']}")
    if current.get("definition") == parsed:
        return dict(current)
    return dict(
        _request(
            client, "PUT", f"/api/v1/workflows/{existing['id']}", content=content, headers=headers
        )
    )


# --- events -----------------------------------------------------------------------------


TERMINAL_EVENTS = {"execution.completed", "execution.failed", "execution.cancelled"}


def _sse_events(
    client: httpx.Client, execution_id: str, after: int
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, data object) of each SSE frame until the gateway ends the stream."""
    path = f"/api/v1/executions/{execution_id}/events"
    with client.stream(
        "GET", path, params={"after": after}, timeout=httpx.Timeout(30.0, read=None)
    ) as response:
        if response.status_code == 204:  # nothing after `after` and the execution has ended
            return
        if not response.is_success:
            response.read()
            raise CliError(f"event stream: HTTP {response.status_code}: {response.text}")
        name, data = "message", []
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif not line:
                if data:
                    yield name, json.loads("\n".join(data))
                name, data = "message", []


def _follow(client: httpx.Client, execution_id: str, show: bool) -> None:
    """Print node progress until the execution ends, resuming a stream that ended early."""
    last_seq = 0
    started: dict[str, float] = {}
    failures = 0
    while True:
        try:
            for name, event in _sse_events(client, execution_id, last_seq):
                if name == "error":
                    raise CliError(f"event stream: {_error_text(event)}")
                last_seq = max(last_seq, int(event.get("seq", 0)))
                line = progress_line(event, started) if show else None
                if line:
                    print(line, flush=True)
                if event.get("type") in TERMINAL_EVENTS:
                    return
        except httpx.TransportError:
            failures += 1
            if failures > MAX_RECONNECTS:
                raise CliError(
                    f"lost the event stream; see `heddle status {execution_id}`"
                ) from None
            time.sleep(0.5)
            continue
        execution = _request(client, "GET", f"/api/v1/executions/{execution_id}")
        if execution["status"] in TERMINAL:
            return


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _error_text(data: Any) -> str:
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("type") or error)
        if error:
            return str(error)
    return "error"


def progress_line(event: dict[str, Any], started: dict[str, float]) -> str | None:
    """The line `run` prints for an event (None for events it does not show)."""
    kind = event.get("type")
    node = event.get("node_id") or ""
    data = event.get("data") or {}
    ts = _timestamp(event.get("ts"))
    if kind == "node.started":
        if ts is not None:
            started[node] = ts
        return None
    if kind == "node.completed":
        duration = data.get("duration_ms") if isinstance(data, dict) else None
        if duration is None and ts is not None and node in started:
            duration = (ts - started[node]) * 1000
        status = data.get("status", "succeeded") if isinstance(data, dict) else "succeeded"
        timing = f" {duration:.0f} ms" if isinstance(duration, int | float) else ""
        return f"✓ {node:<16} {status}{timing}"
    if kind == "node.failed":
        return f"✗ {node:<16} failed: {_error_text(data)}"
    if kind == "node.retrying":
        attempt = data.get("attempt", "?") if isinstance(data, dict) else "?"
        return f"↻ {node:<16} retrying (attempt {attempt}): {_error_text(data)}"
    if kind == "node.skipped":
        return f"↷ {node:<16} skipped"
    if kind == "node.waiting":
        prompt = data.get("prompt") if isinstance(data, dict) else None
        return f"… {node:<16} waiting for input" + (f": {prompt}" if prompt else "")
    if kind in {"execution.paused", "execution.resumed"}:
        return f"  execution {kind.split('.')[1]}"
    return None


# --- commands ---------------------------------------------------------------------------


def _exit_code(status: str) -> int:
    return 0 if status == "succeeded" else 1


def cmd_run(args: argparse.Namespace) -> int:
    inputs = parse_inputs(args.input or [], args.input_file)
    with _client(args.url) as client:
        workflow = _save_workflow(client, args.file)
        body: dict[str, Any] = {"inputs": inputs}
        started = _request(client, "POST", f"/api/v1/workflows/{workflow['id']}/execute", json=body)
        execution_id = started["execution_id"]
        if not args.json:
            print(
                f"{workflow['name']} v{workflow['version']}  execution {execution_id}", flush=True
            )
        try:
            _follow(client, execution_id, show=not args.json)
        except KeyboardInterrupt:
            print(f"\nexecution {execution_id} still runs: heddle status {execution_id}")
            return 130
        execution = _request(client, "GET", f"/api/v1/executions/{execution_id}")
    if args.json:
        print(json.dumps(execution, indent=2, ensure_ascii=False))
        return _exit_code(execution["status"])
    print(f"{execution['status']}", end="")
    if execution.get("duration_ms") is not None:
        print(f" in {execution['duration_ms']:.0f} ms", end="")
    print()
    if execution.get("error"):
        print(f"error: {_error_text(execution['error'])}", file=sys.stderr)
    if execution.get("outputs") is not None:
        print(json.dumps(execution["outputs"], indent=2, ensure_ascii=False))
    return _exit_code(execution["status"])


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args.url) as client:
        execution = _request(client, "GET", f"/api/v1/executions/{args.execution_id}")
    if args.json:
        print(json.dumps(execution, indent=2, ensure_ascii=False))
        return 0
    print(f"execution {execution['id']}  {execution['status']}")
    if execution.get("error"):
        print(f"error: {_error_text(execution['error'])}")
    rows = [["NODE", "TYPE", "STATUS", "ATTEMPTS", "DURATION", "ERROR"]]
    for node in execution.get("nodes", []):
        duration = node.get("duration_ms")
        rows.append(
            [
                node["node_id"],
                node["type"],
                node["status"],
                str(node["attempts"]),
                f"{duration:.0f} ms" if duration is not None else "",
                _error_text(node["error"])[:60] if node.get("error") else "",
            ]
        )
    print(_table(rows))
    return 0


def _issue_text(issue: dict[str, Any]) -> str:
    where = [
        f"node {issue['node_id']}" if issue.get("node_id") else "",
        f"edge {issue['edge']}" if issue.get("edge") is not None else "",
        f"field {issue['field']}" if issue.get("field") else "",
    ]
    location = ", ".join(part for part in where if part)
    prefix = f"{issue.get('severity', 'error')} [{issue.get('code', '')}]"
    return f"{prefix} {location + ': ' if location else ''}{issue.get('message', '')}"


def cmd_validate(args: argparse.Namespace) -> int:
    content, media_type, _ = _read_definition(args.file)
    with _client(args.url) as client:
        report = _request(
            client,
            "POST",
            "/api/v1/workflows/validate",
            content=content,
            headers={"content-type": media_type},
        )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.file}: {'valid' if report['valid'] else 'invalid'}")
        for issue in report["issues"]:
            print(f"  {_issue_text(issue)}")
    return 0 if report["valid"] else 1


# Stack commands live in modules that import every service: loaded only when used.
STACK_COMMANDS = {
    "serve": ("libs.cli.stack", "serve_embedded"),
    "up": ("libs.cli.topology", "up"),
    "down": ("libs.cli.topology", "down"),
    "db upgrade": ("libs.cli.stack", "db_upgrade"),
}


def cmd_stack(args: argparse.Namespace) -> int:
    module_name, function_name = STACK_COMMANDS[args.stack_command]
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError):
        raise CliError(f"`heddle {args.stack_command}` is not available in this build") from None
    return int(handler(args) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heddle",
        description="Run Heddle workflows and manage the stack.",
        epilog="Exit codes: 0 success, 1 failed or cancelled execution or an error, 2 usage.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_url(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument(
            "--url",
            default=os.environ.get("HEDDLE_URL", DEFAULT_URL),
            help="gateway URL (default: $HEDDLE_URL or %(default)s)",
        )
        sub.add_argument("--json", action="store_true", help="print JSON only")
        return sub

    run = with_url(
        commands.add_parser("run", help="create or update a workflow, run it, follow it")
    )
    run.add_argument("file", help="workflow definition (.yaml, .yml or .json)")
    run.add_argument(
        "--input", "-i", action="append", metavar="KEY=VALUE", help="an input (JSON or a string)"
    )
    run.add_argument("--input-file", metavar="FILE", help="inputs as a JSON or YAML mapping")
    run.set_defaults(handler=cmd_run)

    status = with_url(commands.add_parser("status", help="an execution's status and nodes"))
    status.add_argument("execution_id")
    status.set_defaults(handler=cmd_status)

    validate = with_url(commands.add_parser("validate", help="validate a definition"))
    validate.add_argument("file")
    validate.set_defaults(handler=cmd_validate)

    serve = commands.add_parser("serve", help="run every service in this process")
    serve.add_argument("--port", type=int, help="gateway HTTP port (default 8080)")
    serve.set_defaults(handler=cmd_stack, stack_command="serve")
    commands.add_parser("up", help="start the services as separate processes").set_defaults(
        handler=cmd_stack, stack_command="up"
    )
    commands.add_parser("down", help="stop the services started by `up`").set_defaults(
        handler=cmd_stack, stack_command="down"
    )
    db = commands.add_parser("db", help="database tasks")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="TASK")
    db_commands.add_parser("upgrade", help="apply the migrations").set_defaults(
        handler=cmd_stack, stack_command="db upgrade"
    )
    return parser


def _fail(message: str) -> NoReturn:
    print(f"heddle: {message}", file=sys.stderr)
    raise SystemExit(1)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.handler(args))
    except CliError as error:
        _fail(str(error))
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
