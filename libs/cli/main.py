"""The `heddle` command (Typer + Rich): run workflows, inspect and control executions, manage
schedules, keys and secrets, and start or stop the stack.

    heddle run examples/hello.yaml --input name=Ada
    heddle executions list --status failed
    heddle logs <execution-id> --follow
    heddle serve | up | down | db upgrade

The gateway is --server, else HEDDLE_SERVER, else http://127.0.0.1:8080; the API key is
--api-key or HEDDLE_API_KEY, else the development key the embedded stack offers to loopback
callers. Exit codes: 0 success; 1 an error, or a failed or cancelled execution; 2 usage.
"""

from __future__ import annotations

import argparse
import enum
import importlib
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from libs.cli.api import DEFAULT_SERVER, Api, CliError, dumps, issue_text
from libs.cli.follow import error_text, events, follow, stdin_is_terminal, waiting_hint
from libs.cli.inputs import declared_types, parse_inputs, parse_pairs

YAML_SUFFIXES = {".yaml", ".yml"}

app = typer.Typer(
    name="heddle",
    help="Run Heddle workflows, follow and control executions, and manage the stack.",
    epilog="Exit codes: 0 success; 1 an error, or a failed or cancelled execution; 2 usage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
workflows_app = typer.Typer(help="Workflow definitions.", no_args_is_help=True)
executions_app = typer.Typer(help="Executions of workflows.", no_args_is_help=True)
schedules_app = typer.Typer(help="Cron schedules.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the tenant (admins).", no_args_is_help=True)
secrets_app = typer.Typer(
    help="Secrets of the tenant, read by workflows as {{ secrets.NAME }}.", no_args_is_help=True
)
db_app = typer.Typer(help="Database tasks.", no_args_is_help=True)
app.add_typer(workflows_app, name="workflows")
app.add_typer(executions_app, name="executions")
app.add_typer(schedules_app, name="schedules")
app.add_typer(keys_app, name="keys")
app.add_typer(secrets_app, name="secrets")
app.add_typer(db_app, name="db")


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@dataclass
class Globals:
    server: str
    api_key: str | None

    def api(self) -> Api:
        return Api(self.server, self.api_key)


@app.callback()
def _globals(
    ctx: typer.Context,
    server: Annotated[
        str,
        typer.Option(
            "--server",
            envvar=["HEDDLE_SERVER", "HEDDLE_URL"],
            help="Gateway URL.",
            show_envvar=True,
        ),
    ] = DEFAULT_SERVER,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="HEDDLE_API_KEY",
            help="API key (default: the embedded stack's development key, on loopback).",
            show_envvar=True,
            show_default=False,
        ),
    ] = None,
) -> None:
    ctx.obj = Globals(server=server, api_key=api_key or None)


def _api(ctx: typer.Context) -> Api:
    settings = ctx.find_object(Globals)
    return (settings or Globals(DEFAULT_SERVER, None)).api()


def _out() -> Console:
    """Rich console of stdout: colour and live views only on a terminal (NO_COLOR honoured);
    piped, lines are never folded at 80 columns (scripts read whole ids)."""
    console = Console(soft_wrap=True)
    if not console.is_terminal:
        console = Console(soft_wrap=True, width=100_000)
    return console


def _print_json(value: Any) -> None:
    print(dumps(value), flush=True)


def _table(columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for index, column in enumerate(columns):
        last = index == len(columns) - 1
        table.add_column(column, no_wrap=not last, overflow="fold" if last else "ellipsis")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    _out().print(table)


def _status_text(status: str) -> str:
    style = {
        "succeeded": "green",
        "failed": "red",
        "cancelled": "yellow",
        "running": "cyan",
        "waiting": "magenta",
        "paused": "yellow",
    }.get(status)
    return f"[{style}]{status}[/{style}]" if style else status


def _ms(value: Any) -> str:
    return f"{value:.0f} ms" if isinstance(value, int | float) else ""


# --- workflow files --------------------------------------------------------------------


def read_definition(path: str) -> tuple[bytes, str, dict[str, Any]]:
    """The file's bytes, its media type and its parsed content."""
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


def normalised(definition: dict[str, Any]) -> dict[str, Any]:
    """The definition as the workflow service stores it (its model, dumped the same way), so
    that an unchanged file compares equal to the saved version."""
    from pydantic import ValidationError

    from libs.common.definition import WorkflowDefinition

    try:
        model = WorkflowDefinition.model_validate(definition)
    except ValidationError:
        return definition  # the server will refuse it and say why
    return model.model_dump(mode="json", exclude_none=True)


def find_workflow(api: Api, name: str) -> dict[str, Any] | None:
    return next((w for w in api.pages("/api/v1/workflows") if w["name"] == name), None)


def resolve_workflow(api: Api, reference: str) -> dict[str, Any]:
    """A workflow by id or by name."""
    try:
        uuid.UUID(reference)
    except ValueError:
        found = find_workflow(api, reference)
        if found is None:
            raise CliError(f"not_found: no workflow named {reference!r}") from None
        return found
    return dict(api.get(f"/api/v1/workflows/{reference}"))


def save_workflow(api: Api, path: str) -> tuple[dict[str, Any], bool]:
    """Create the workflow, or save a new version of the one with the same name when the
    file differs from its latest version; (workflow, whether a version was saved)."""
    content, media_type, parsed = read_definition(path)
    headers = {"content-type": media_type}
    name = parsed.get("name")
    existing = find_workflow(api, name) if isinstance(name, str) and name else None
    if existing is None:
        return dict(api.post("/api/v1/workflows", content=content, headers=headers)), True
    current = api.get(f"/api/v1/workflows/{existing['id']}")
    if current.get("definition") == normalised(parsed):
        return dict(current), False
    updated = api.request(
        "PUT", f"/api/v1/workflows/{existing['id']}", content=content, headers=headers
    )
    return dict(updated), True


# --- run -------------------------------------------------------------------------------


def _exit_code(status: str) -> int:
    return 0 if status == "succeeded" else 1


@app.command()
def run(
    ctx: typer.Context,
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE",
            help="Workflow definitions (.yaml, .yml or .json).",
            show_default=False,
        ),
    ],
    input_pairs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            metavar="KEY=VALUE",
            help="An input, typed by the workflow's declared inputs (repeatable).",
        ),
    ] = None,
    input_file: Annotated[
        Path | None, typer.Option(help="Inputs as a JSON or YAML mapping.")
    ] = None,
    json_output: JsonFlag = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Start and print the execution id; do not follow.")
    ] = False,
) -> None:
    """Save each workflow (a new version only when the file changed), run it, and follow it."""
    console = _out()
    interactive = console.is_terminal and stdin_is_terminal() and not json_output
    results: list[dict[str, Any]] = []
    with _api(ctx) as api:
        started = []
        finished: set[str] = set()
        for file in files:
            workflow, saved = save_workflow(api, str(file))
            declared = (workflow.get("definition") or {}).get("inputs")
            inputs = parse_inputs(
                input_pairs or [], str(input_file) if input_file else None, declared
            )
            if json_output and not no_wait:
                # Run-and-wait: most runs end within the short wait and need no event
                # stream; a longer one (or one waiting for input) answers 202 and is followed.
                execution = _run_briefly(api, workflow["id"], inputs)
                if execution.pop("finished"):
                    finished.add(execution["execution_id"])
            else:
                execution = api.post(
                    f"/api/v1/workflows/{workflow['id']}/execute", json={"inputs": inputs}
                )
            started.append((workflow, saved, execution["execution_id"]))
            if no_wait:
                if json_output:
                    results.append({"workflow": workflow["name"], **execution})
                else:
                    print(execution["execution_id"], flush=True)
        if no_wait:
            if json_output:
                _print_json(results[0] if len(results) == 1 else results)
            return
        for workflow, saved, execution_id in started:
            title = (
                f"{workflow['name']} v{workflow['version']}{'' if saved else ' (unchanged)'}"
                f"  execution {execution_id}"
            )
            if json_output and execution_id in finished:
                pass  # it ended within the run's wait: no events to follow
            elif json_output:
                for event in events(api, execution_id):
                    if event.get("type") == "node.waiting":  # stdout is for the JSON
                        print(waiting_hint(execution_id, event), file=sys.stderr, flush=True)
            else:
                try:
                    follow(api, console, execution_id, title, interactive)
                except KeyboardInterrupt:
                    print(
                        f"\nexecution {execution_id} still runs: heddle executions show "
                        f"{execution_id}",
                        file=sys.stderr,
                    )
                    raise typer.Exit(130) from None
            execution = api.get(f"/api/v1/executions/{execution_id}")
            results.append(execution)
            if not json_output:
                _summary(console, execution)
    if json_output:
        _print_json(results[0] if len(results) == 1 else results)
    raise typer.Exit(max(_exit_code(e["status"]) for e in results))


RUN_WAIT_S = 2.0


def _run_briefly(api: Api, workflow_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """POST /run with a short wait: {"execution_id", "status", "finished"}."""
    response = api.request(
        "POST", f"/api/v1/workflows/{workflow_id}/run?wait={RUN_WAIT_S:g}", json={"inputs": inputs}
    )
    if "execution_id" in response:  # 202: still running
        return {**response, "finished": False}
    return {"execution_id": response["id"], "status": response["status"], "finished": True}


def _summary(console: Console, execution: dict[str, Any]) -> None:
    duration = execution.get("duration_ms")
    timing = f" in {duration:.0f} ms" if isinstance(duration, int | float) else ""
    console.print(f"{_status_text(execution['status'])}{timing}", highlight=False)
    if execution.get("error"):
        print(f"error: {error_text(execution['error'])}", file=sys.stderr, flush=True)
    if execution.get("outputs") is not None:
        print(dumps(execution["outputs"]), flush=True)


# --- validate ----------------------------------------------------------------------------


@app.command()
def validate(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(metavar="FILE", help="Definitions to check.")],
    json_output: JsonFlag = False,
) -> None:
    """Validate definitions without saving them."""
    reports = []
    with _api(ctx) as api:
        for file in files:
            content, media_type, _ = read_definition(str(file))
            report = api.post(
                "/api/v1/workflows/validate",
                content=content,
                headers={"content-type": media_type},
            )
            reports.append({"file": str(file), **report})
    if json_output:
        _print_json(reports[0] if len(reports) == 1 else reports)
    else:
        for report in reports:
            print(f"{report['file']}: {'valid' if report['valid'] else 'invalid'}")
            for issue in report["issues"]:
                print(f"  {issue_text(issue)}")
    raise typer.Exit(0 if all(r["valid"] for r in reports) else 1)


# --- workflows ---------------------------------------------------------------------------


@workflows_app.command("list")
def workflows_list(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Workflows with their latest version."""
    with _api(ctx) as api:
        items = list(api.pages("/api/v1/workflows"))
    if json_output:
        _print_json(items)
        return
    _table(
        ["NAME", "VERSION", "ID", "UPDATED", "DESCRIPTION"],
        [
            [w["name"], w["version"], w["id"], w.get("updated_at"), w.get("description")]
            for w in items
        ],
    )


@workflows_app.command("show")
def workflows_show(
    ctx: typer.Context,
    workflow: Annotated[str, typer.Argument(help="Name or id.")],
    version: Annotated[int | None, typer.Option(help="A past version.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """A workflow's definition (YAML; --json for JSON)."""
    with _api(ctx) as api:
        found = resolve_workflow(api, workflow)
        params = {"version": version} if version else None
        full = api.get(f"/api/v1/workflows/{found['id']}", params=params)
    if json_output:
        _print_json(full)
        return
    print(f"# {full['name']} v{full['version']}  id {full['id']}")
    print(yaml.safe_dump(full.get("definition"), sort_keys=False, allow_unicode=True), end="")


@workflows_app.command("delete")
def workflows_delete(
    ctx: typer.Context,
    workflow: Annotated[str, typer.Argument(help="Name or id.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete a workflow and all its versions."""
    with _api(ctx) as api:
        found = resolve_workflow(api, workflow)
        if not yes and not typer.confirm(f"delete workflow {found['name']} ({found['id']})?"):
            raise typer.Exit(1)
        api.request("DELETE", f"/api/v1/workflows/{found['id']}")
    print(f"deleted {found['name']}")


# --- executions --------------------------------------------------------------------------


@executions_app.command("list")
def executions_list(
    ctx: typer.Context,
    workflow: Annotated[str | None, typer.Option(help="Only this workflow's (name or id).")] = None,
    status: Annotated[str | None, typer.Option(help="Only executions in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 20,
    json_output: JsonFlag = False,
) -> None:
    """Executions, newest first."""
    with _api(ctx) as api:
        params: dict[str, Any] = {"page_size": limit}
        names: dict[str, str] = {}
        if workflow:
            found = resolve_workflow(api, workflow)
            params["workflow_id"] = found["id"]
            names[found["id"]] = found["name"]
        if status:
            params["status"] = status
        items = api.get("/api/v1/executions", params=params)["items"]
        if not json_output and not workflow:
            names = {w["id"]: w["name"] for w in api.pages("/api/v1/workflows")}
    if json_output:
        _print_json(items)
        return
    _table(
        ["ID", "WORKFLOW", "STATUS", "CREATED", "DURATION"],
        [
            [
                e["id"],
                f"{names.get(e['workflow_id'], e['workflow_id'])} v{e['workflow_version']}",
                e["status"],
                e.get("created_at"),
                _ms(e.get("duration_ms")),
            ]
            for e in items
        ],
    )


def _show_execution(ctx: typer.Context, execution_id: str, json_output: bool) -> None:
    with _api(ctx) as api:
        execution = api.get(f"/api/v1/executions/{execution_id}")
    if json_output:
        _print_json(execution)
        return
    console = _out()
    console.print(
        f"execution {execution['id']}  {_status_text(execution['status'])}", highlight=False
    )
    if execution.get("error"):
        print(f"error: {error_text(execution['error'])}")
    _table(
        ["NODE", "TYPE", "STATUS", "ATTEMPTS", "DURATION", "ERROR"],
        [
            [
                node["node_id"],
                node["type"],
                node["status"],
                node["attempts"],
                _ms(node.get("duration_ms")),
                error_text(node["error"])[:80] if node.get("error") else "",
            ]
            for node in execution.get("nodes", [])
        ],
    )
    if execution.get("outputs") is not None:
        print(dumps(execution["outputs"]))


@executions_app.command("show")
def executions_show(
    ctx: typer.Context,
    execution_id: Annotated[str, typer.Argument(metavar="EXECUTION")],
    json_output: JsonFlag = False,
) -> None:
    """An execution with each node's status, attempts and timings."""
    _show_execution(ctx, execution_id, json_output)


@app.command()
def status(
    ctx: typer.Context,
    execution_id: Annotated[str, typer.Argument(metavar="EXECUTION")],
    json_output: JsonFlag = False,
) -> None:
    """An execution's status and nodes (same as `executions show`)."""
    _show_execution(ctx, execution_id, json_output)


def _control(ctx: typer.Context, execution_id: str, action: str, json_output: bool) -> None:
    with _api(ctx) as api:
        reply = api.post(f"/api/v1/executions/{execution_id}/{action}")
    if json_output:
        _print_json(reply)
    elif action == "retry":
        print(reply["execution_id"])
    else:
        _out().print(f"execution {reply['id']}  {_status_text(reply['status'])}", highlight=False)


ExecutionArg = Annotated[str, typer.Argument(metavar="EXECUTION", help="Execution id.")]


@app.command()
def cancel(ctx: typer.Context, execution_id: ExecutionArg, json_output: JsonFlag = False) -> None:
    """Cancel an execution: stop what runs, dispatch nothing more."""
    _control(ctx, execution_id, "cancel", json_output)


@app.command()
def pause(ctx: typer.Context, execution_id: ExecutionArg, json_output: JsonFlag = False) -> None:
    """Pause an execution: running nodes finish, nothing more is dispatched."""
    _control(ctx, execution_id, "pause", json_output)


@app.command()
def resume(ctx: typer.Context, execution_id: ExecutionArg, json_output: JsonFlag = False) -> None:
    """Resume a paused execution."""
    _control(ctx, execution_id, "resume", json_output)


@app.command()
def retry(ctx: typer.Context, execution_id: ExecutionArg, json_output: JsonFlag = False) -> None:
    """Re-run a failed execution (reusing what succeeded); prints the new execution's id."""
    _control(ctx, execution_id, "retry", json_output)


@app.command("input")
def submit_input(
    ctx: typer.Context,
    execution_id: ExecutionArg,
    node: Annotated[str, typer.Argument(help="The waiting human_input node.")],
    data: Annotated[
        list[str],
        typer.Option(
            "--data",
            "-d",
            metavar="JSON|KEY=VALUE",
            help="The answer as one JSON value, or key=value fields typed by the node's schema.",
        ),
    ],
    json_output: JsonFlag = False,
) -> None:
    """Answer a waiting human_input node."""
    with _api(ctx) as api:
        waiting = _waiting_for(api, execution_id, node)
        if len(data) == 1 and "=" not in data[0].split("{", 1)[0]:
            try:
                answer: Any = json.loads(data[0])
            except ValueError:
                raise CliError(f"--data: not JSON and not key=value: {data[0]!r}") from None
        else:
            schema = waiting.get("schema")
            properties = schema.get("properties") if isinstance(schema, dict) else None
            answer = parse_pairs(data, declared_types(properties), option="--data")
        reply = api.post(
            f"/api/v1/executions/{execution_id}/input", json={"node_id": node, "data": answer}
        )
    if json_output:
        _print_json(reply)
    else:
        _out().print(f"execution {reply['id']}  {_status_text(reply['status'])}", highlight=False)


def _waiting_for(api: Api, execution_id: str, node_id: str, patience_s: float = 15.0) -> Any:
    """What the node asks for, once it waits: a node that has not reached the human_input
    step yet (`heddle run --no-wait` just before) is waited for, for a while."""
    deadline = time.monotonic() + patience_s
    while True:
        execution = api.get(f"/api/v1/executions/{execution_id}")
        node = next((n for n in execution.get("nodes", []) if n["node_id"] == node_id), None)
        status = node["status"] if node else None
        if status == "waiting":
            return node.get("waiting") if node and isinstance(node.get("waiting"), dict) else {}
        not_yet = {None, "pending", "running", "retrying"}
        if execution["status"] in {"succeeded", "failed", "cancelled"} or status not in not_yet:
            return {}  # the service says why it cannot take an answer
        if time.monotonic() >= deadline:
            return {}
        time.sleep(0.2)


# --- logs --------------------------------------------------------------------------------


@app.command()
def logs(
    ctx: typer.Context,
    execution_id: ExecutionArg,
    node: Annotated[str | None, typer.Option(help="Only this node's records.")] = None,
    level: Annotated[
        LogLevel | None, typer.Option(case_sensitive=False, help="Minimum level.")
    ] = None,
    follow_logs: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the execution ends.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON record a line.")] = False,
) -> None:
    """An execution's log records."""
    params: dict[str, Any] = {}
    if node:
        params["node_id"] = node
    if level:
        params["level"] = level.value
    seen: set[tuple[Any, ...]] = set()
    console = _out()

    def emit(record: dict[str, Any]) -> None:
        if json_output:
            print(json.dumps(record, ensure_ascii=False), flush=True)
            return
        level_name = str(record["level"])
        line = Text.assemble(
            (f"{record.get('ts') or ''} ", "dim"),
            (f"{level_name:<7}", _LEVEL_STYLES.get(level_name.upper(), "")),
            f" {record['node_id']}" if record.get("node_id") else "",
            f"  {record['message']}",
        )
        console.print(line, highlight=False)

    # A record reaches the log service through the broker, possibly after a later one: each
    # poll re-reads a margin before the newest record seen (duplicates are dropped).
    since: datetime | None = None
    with _api(ctx) as api:
        while True:
            ended = not follow_logs or api.get(f"/api/v1/executions/{execution_id}")["status"] in {
                "succeeded",
                "failed",
                "cancelled",
            }
            token: str | None = None
            while True:
                query = {**params, **({"page_token": token} if token else {})}
                if since is not None:
                    query["since"] = (since - FOLLOW_MARGIN).isoformat()
                page = api.get(f"/api/v1/executions/{execution_id}/logs", params=query)
                for record in page["records"]:
                    key = (
                        record.get("ts"),
                        record.get("node_id"),
                        record.get("attempt"),
                        record["message"],
                    )
                    if key not in seen:
                        seen.add(key)
                        emit(record)
                    stamp = _parse_ts(record.get("ts"))
                    if stamp is not None and (since is None or stamp > since):
                        since = stamp
                token = page.get("next_page_token")
                if not token:
                    break
            if ended:
                return
            time.sleep(1.0)


_LEVEL_STYLES = {"ERROR": "red", "CRITICAL": "red", "WARNING": "yellow", "DEBUG": "dim"}
FOLLOW_MARGIN = timedelta(seconds=10)


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# --- schedules ---------------------------------------------------------------------------


@schedules_app.command("list")
def schedules_list(
    ctx: typer.Context,
    workflow: Annotated[str | None, typer.Option(help="Only this workflow's (name or id).")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Schedules (a workflow's, or all of the tenant's for admins)."""
    with _api(ctx) as api:
        params = {"workflow_id": resolve_workflow(api, workflow)["id"]} if workflow else {}
        items = list(api.pages("/api/v1/schedules", params))
    if json_output:
        _print_json(items)
        return
    _table(
        ["ID", "NAME", "WORKFLOW", "CRON", "TZ", "ENABLED", "NEXT"],
        [
            [
                s["id"],
                s["name"],
                s["workflow_id"],
                s["cron"],
                s["timezone"],
                s["enabled"],
                s.get("next_fire_at"),
            ]
            for s in items
        ],
    )


@schedules_app.command("create")
def schedules_create(
    ctx: typer.Context,
    workflow: Annotated[str, typer.Argument(help="Name or id.")],
    cron: Annotated[str, typer.Option(help="5 fields, or 6 with seconds first.")],
    timezone: Annotated[str, typer.Option(help="IANA time zone.")] = "UTC",
    name: Annotated[str, typer.Option(help="A name for it.")] = "",
    input_pairs: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", metavar="KEY=VALUE", help="An input of each run."),
    ] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it paused.")] = False,
    json_output: JsonFlag = False,
) -> None:
    """Run a workflow on a cron schedule."""
    with _api(ctx) as api:
        found = resolve_workflow(api, workflow)
        definition = api.get(f"/api/v1/workflows/{found['id']}").get("definition") or {}
        inputs = parse_inputs(input_pairs or [], None, definition.get("inputs"))
        created = api.post(
            "/api/v1/schedules",
            json={
                "workflow_id": found["id"],
                "cron": cron,
                "timezone": timezone,
                "name": name,
                "inputs": inputs,
                "enabled": not disabled,
            },
        )
    if json_output:
        _print_json(created)
    else:
        print(f"{created['id']}  next run {created.get('next_fire_at') or '-'}")


@schedules_app.command("delete")
def schedules_delete(
    ctx: typer.Context, schedule_id: Annotated[str, typer.Argument(metavar="SCHEDULE")]
) -> None:
    """Delete a schedule."""
    with _api(ctx) as api:
        api.request("DELETE", f"/api/v1/schedules/{schedule_id}")
    print(f"deleted {schedule_id}")


# --- keys and secrets --------------------------------------------------------------------


@keys_app.command("list")
def keys_list(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """API keys (never the keys themselves)."""
    with _api(ctx) as api:
        items = list(api.pages("/api/v1/api-keys"))
    if json_output:
        _print_json(items)
        return
    _table(
        ["ID", "NAME", "PREFIX", "SCOPES", "EXPIRES", "LAST USED", "REVOKED"],
        [
            [
                k["id"],
                k["name"],
                k["prefix"],
                ",".join(k["scopes"]),
                k.get("expires_at") or "never",
                k.get("last_used_at"),
                k["revoked"],
            ]
            for k in items
        ],
    )


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="What the key is for.")] = "",
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="A scope (repeatable; default: all).")
    ] = None,
    expires_in_days: Annotated[int | None, typer.Option(min=1, help="Lifetime.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Create an API key; the key is printed this once."""
    body: dict[str, Any] = {"name": name, "expires_in_days": expires_in_days}
    if scope:
        body["scopes"] = scope
    with _api(ctx) as api:
        created = api.post("/api/v1/api-keys", json=body)
    if json_output:
        _print_json(created)
    else:
        print(created["key"])
        print(f"(id {created['id']}; shown this once)", file=sys.stderr)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument(metavar="KEY_ID")]
) -> None:
    """Revoke an API key at once."""
    with _api(ctx) as api:
        api.request("DELETE", f"/api/v1/api-keys/{key_id}")
    print(f"revoked {key_id}")


@secrets_app.command("list")
def secrets_list(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """Names of the secrets (never their values)."""
    with _api(ctx) as api:
        items = api.get("/api/v1/secrets")["secrets"]
    if json_output:
        _print_json(items)
        return
    _table(["NAME", "UPDATED"], [[s["name"], s.get("updated_at")] for s in items])


@secrets_app.command("set")
def secrets_set(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Read as {{ secrets.NAME }}.")],
    value: Annotated[
        str | None,
        typer.Option(help="The value (default: read from stdin, or asked for, hidden)."),
    ] = None,
) -> None:
    """Create or replace a secret."""
    if value is None:
        if stdin_is_terminal():
            value = typer.prompt(f"value of {name}", hide_input=True)
        else:
            value = sys.stdin.read().rstrip("\n")
    with _api(ctx) as api:
        api.post("/api/v1/secrets", json={"name": name, "value": value})
    print(f"set {name}")


@secrets_app.command("delete")
def secrets_delete(ctx: typer.Context, name: Annotated[str, typer.Argument()]) -> None:
    """Delete a secret."""
    with _api(ctx) as api:
        api.request("DELETE", f"/api/v1/secrets/{name}")
    print(f"deleted {name}")


# --- the stack ---------------------------------------------------------------------------


def _stack(module_name: str, function_name: str, **options: Any) -> None:
    """Stack commands live in modules that import every service: loaded only when used."""
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError):
        raise CliError(f"`heddle {function_name}` is not available in this build") from None
    code = int(handler(argparse.Namespace(**options)) or 0)
    raise typer.Exit(code)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def worker(ctx: typer.Context) -> None:
    """Serve the @node_type functions of modules or .py files to a cluster (heddle_sdk).

    heddle worker MODULE_OR_FILE... [--server HOST:PORT] [--api-key KEY] [--max-concurrency N]
    (`heddle worker --help` for every option)
    """
    try:  # the SDK is a package of its own (libs/sdk): only this command needs it
        from heddle_sdk.cli import run as run_worker
    except ImportError:
        raise CliError("`heddle worker` needs the SDK: pip install ./libs/sdk") from None
    raise typer.Exit(run_worker(ctx.args, prog="heddle worker"))


@app.command()
def serve(
    port: Annotated[
        int | None,
        typer.Option(envvar="HEDDLE_HTTP_PORT", help="Gateway HTTP port.", show_default="8080"),
    ] = None,
    free_ports: Annotated[
        bool,
        typer.Option(
            "--free-ports",
            envvar="HEDDLE_FREE_PORTS",
            help="Give the gRPC services free ports instead of 50051-50056 (beside another stack).",
        ),
    ] = False,
) -> None:
    """Run the whole stack in this process (SQLite, in-process bus) until Ctrl-C."""
    _stack("libs.cli.stack", "serve_embedded", port=port, free_ports=free_ports, command="serve")


@app.command()
def up() -> None:
    """Start the production topology as local processes (PostgreSQL, Redis, RabbitMQ)."""
    _stack("libs.cli.topology", "up", command="up")


@app.command()
def down() -> None:
    """Stop the processes started by `heddle up`."""
    _stack("libs.cli.topology", "down", command="down")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations to HEDDLE_DATABASE_URL."""
    _stack("libs.cli.stack", "db_upgrade", command="db upgrade")


# --- entry point -------------------------------------------------------------------------


def _quiet_broken_pipe() -> None:
    """The reader of our stdout went away (`heddle ... | head -1`): end without a word."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            app(args=argv, prog_name="heddle")
        except CliError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            return 1
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:
            raise
        except Exception as error:  # a bug: still one line, unless asked for the traceback
            if os.environ.get("HEDDLE_DEBUG"):
                raise
            print(
                f"error: internal: {type(error).__name__}: {error} "
                "(HEDDLE_DEBUG=1 shows the traceback)",
                file=sys.stderr,
                flush=True,
            )
            return 1
        except SystemExit as exited:
            code = exited.code
            return code if isinstance(code, int) else (0 if code is None else 1)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        _quiet_broken_pipe()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
