"""Following an execution: its SSE event stream (resumed by seq after a disconnect), the
progress view (a live Rich table on a terminal, one line per event otherwise), and answers
to `human_input` nodes (asked for on a terminal, else the `heddle input` command to run)."""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.prompt import Confirm, Prompt
from rich.table import Table
from rich.text import Text

from libs.cli.api import Api, CliError
from libs.cli.inputs import convert
from libs.cli.invocation import cli_command

TERMINAL_STATUSES = {"succeeded", "failed", "cancelled"}
TERMINAL_EVENTS = {"execution.completed", "execution.failed", "execution.cancelled"}
#: How often in a row `follow` re-opens an event stream that broke before the execution ended.
MAX_RECONNECTS = 8
RECONNECT_PAUSE_S = 0.5


# --- the event stream --------------------------------------------------------------------


def sse_frames(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, data object) of each SSE frame of a stream of lines."""
    name, data = "message", []
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line:
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []


def events(api: Api, execution_id: str) -> Iterator[dict[str, Any]]:
    """Every event of an execution until it ends; a stream that breaks (or that the gateway
    ends early) is opened again with `?after=<last seq>`, so nothing is missed or repeated."""
    path = f"/api/v1/executions/{execution_id}/events"
    last_seq = 0
    failures = 0
    while True:
        try:
            response = api.stream(path, {"after": last_seq})
            try:
                if response.status_code == 204:  # nothing after last_seq and it has ended
                    return
                for name, event in sse_frames(response.iter_lines()):
                    if name == "error":
                        raise CliError(f"event stream: {error_text(event)}")
                    seq = int(event.get("seq", 0))
                    if seq and seq <= last_seq:
                        continue
                    last_seq = max(last_seq, seq)
                    failures = 0
                    yield event
                    if event.get("type") in TERMINAL_EVENTS:
                        return
            finally:
                response.close()
        except httpx.TransportError:
            failures += 1
            if failures > MAX_RECONNECTS:
                raise CliError(
                    f"lost the event stream; see `heddle executions show {execution_id}`"
                ) from None
            time.sleep(RECONNECT_PAUSE_S)
            continue
        # The stream ended without a terminal event: resume unless the execution has ended.
        if api.get(f"/api/v1/executions/{execution_id}")["status"] in TERMINAL_STATUSES:
            return
        time.sleep(RECONNECT_PAUSE_S)


# --- rendering ---------------------------------------------------------------------------


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _data_of(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    return data if isinstance(data, dict) else {}


def error_text(data: Any) -> str:
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("type") or error)
        if error:
            return str(error)
    return "error"


@dataclass
class NodeRow:
    status: str = "running"
    started: float | None = None
    duration_ms: float | None = None
    note: str = ""


_SYMBOLS = {
    "running": ("•", "cyan"),
    "succeeded": ("✓", "green"),
    "failed": ("✗", "red"),
    "retrying": ("↻", "yellow"),
    "skipped": ("↷", "dim"),
    "waiting": ("…", "magenta"),
}


@dataclass
class ProgressState:
    """What the events said so far, per node (in the order nodes started)."""

    nodes: dict[str, NodeRow] = field(default_factory=dict)

    def apply(self, event: dict[str, Any]) -> str | None:
        """Record event; the line a non-terminal view prints for it (None: nothing)."""
        kind = event.get("type")
        node = str(event.get("node_id") or "")
        data = _data_of(event)
        ts = _timestamp(event.get("ts"))
        row = self.nodes.setdefault(node, NodeRow()) if node else NodeRow()
        if kind == "node.started":
            row.status, row.started, row.note = "running", ts, ""
            return None
        if kind == "node.completed":
            duration = data.get("duration_ms")
            if duration is None and ts is not None and row.started is not None:
                duration = (ts - row.started) * 1000
            row.status = str(data.get("status", "succeeded"))
            row.duration_ms = duration if isinstance(duration, int | float) else None
            row.note = ""
            timing = f" {row.duration_ms:.0f} ms" if row.duration_ms is not None else ""
            return f"✓ {node:<16} {row.status}{timing}"
        if kind == "node.failed":
            row.status, row.note = "failed", error_text(data)
            return f"✗ {node:<16} failed: {row.note}"
        if kind == "node.retrying":
            attempt = data.get("attempt", "?")
            row.status, row.note = "retrying", f"attempt {attempt}: {error_text(data)}"
            return f"↻ {node:<16} retrying (attempt {attempt}): {error_text(data)}"
        if kind == "node.skipped":
            row.status = "skipped"
            return f"↷ {node:<16} skipped"
        if kind == "node.waiting":
            prompt = data.get("prompt")
            row.status, row.note = "waiting", str(prompt or "waiting for input")
            return f"… {node:<16} waiting for input" + (f": {prompt}" if prompt else "")
        if kind in {"execution.paused", "execution.resumed"}:
            return f"  execution {kind.split('.')[1]}"
        return None

    def table(self, title: str) -> Table:
        table = Table(title=title, title_justify="left", box=None, pad_edge=False)
        for column in ("", "NODE", "STATUS", "TIME", ""):
            table.add_column(column)
        for node, row in self.nodes.items():
            symbol, style = _SYMBOLS.get(row.status, ("•", ""))
            timing = f"{row.duration_ms:.0f} ms" if row.duration_ms is not None else ""
            table.add_row(
                Text(symbol, style=style),
                node,
                Text(row.status, style=style),
                timing,
                Text(row.note[:80], style="dim"),
            )
        return table


def progress_line(event: dict[str, Any], state: ProgressState | None = None) -> str | None:
    """The line a non-terminal progress view prints for one event."""
    return (state or ProgressState()).apply(event)


class ProgressView:
    """A live table on a terminal; plain lines (no escapes) when output is piped."""

    def __init__(self, console: Console, title: str) -> None:
        self.console = console
        self.title = title
        self.state = ProgressState()
        self.live: Live | None = None
        if console.is_terminal:
            self.live = Live(
                self.state.table(title), console=console, refresh_per_second=10, transient=False
            )

    def __enter__(self) -> ProgressView:
        if self.live is not None:
            self.live.start()
        else:
            print(self.title, flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.live is not None and self.live.is_started:
            self.live.update(self.state.table(self.title), refresh=True)
            self.live.stop()

    def restart(self) -> None:
        if self.live is not None and not self.live.is_started:
            self.live.start()

    def show(self, event: dict[str, Any]) -> None:
        line = self.state.apply(event)
        if self.live is not None:
            self.live.update(self.state.table(self.title))
        elif line:
            print(line, flush=True)

    def say(self, text: str) -> None:
        if self.live is not None:
            self.live.console.print(Text(text), soft_wrap=True)
        else:
            print(text, flush=True)


# --- human input ---------------------------------------------------------------------------


def example_answer(schema: Any) -> list[str]:
    """`--data` arguments that show how to answer a node with this schema."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict) or not properties:
        return ["--data", "'{}'"]
    samples = {"boolean": "true", "integer": "1", "number": "1.5", "object": "{}", "array": "[]"}
    args = []
    for name, prop in properties.items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        enum = prop.get("enum") if isinstance(prop, dict) else None
        sample = str(enum[0]) if enum else samples.get(str(kind), "...")
        args += ["--data", shlex.quote(f"{name}={sample}")]
    return args


def waiting_hint(execution_id: str, event: dict[str, Any]) -> str:
    """`answer with: <the heddle input command>` for a node.waiting event."""
    node_id = str(event.get("node_id") or "")
    schema = _data_of(event).get("schema")
    command = [cli_command(), "input", execution_id, node_id, *example_answer(schema)]
    return f"  answer with: {' '.join(command)}"


def ask_for_answer(console: Console, schema: Any) -> Any:
    """Ask on the terminal for each field of a human_input node's JSON Schema."""
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict) or not properties:
        while True:
            raw = Prompt.ask("answer (JSON)", console=console, default="{}")
            try:
                return json.loads(raw)
            except ValueError as error:
                console.print(Text(f"not JSON: {error}", style="red"))
    required = set(schema.get("required") or [])
    answer: dict[str, Any] = {}
    for name, prop in properties.items():
        prop = prop if isinstance(prop, dict) else {}
        kind = prop.get("type") if isinstance(prop.get("type"), str) else None
        label = escape(str(prop.get("title") or name))
        if prop.get("description"):
            label += f" [dim]({escape(str(prop['description']))})[/dim]"
        if kind == "boolean":
            default = prop.get("default")
            answer[name] = Confirm.ask(
                label, console=console, default=bool(default) if default is not None else ...
            )
            continue
        choices = [str(choice) for choice in prop["enum"]] if prop.get("enum") else None
        default = prop.get("default")
        while True:
            raw = Prompt.ask(
                label,
                console=console,
                choices=choices,
                default=str(default) if default is not None else "",
                show_default=default is not None,
            )
            if raw == "" and default is None:
                if name in required:
                    console.print(Text(f"{name} is required", style="red"))
                    continue
                break
            if choices:
                answer[name] = prop["enum"][choices.index(raw)]
                break
            try:
                answer[name] = convert(name, raw, kind, option="field")
                break
            except CliError as error:
                console.print(Text(str(error), style="red"))
    return answer


def answer_waiting_node(
    api: Api,
    console: Console,
    view: ProgressView,
    execution_id: str,
    event: dict[str, Any],
    interactive: bool,
) -> None:
    """A node waits for input: ask for it on a terminal, else say how to answer it."""
    node_id = str(event.get("node_id") or "")
    data = _data_of(event)
    schema = data.get("schema")
    execution = api.get(f"/api/v1/executions/{execution_id}")
    node = next((n for n in execution.get("nodes", []) if n["node_id"] == node_id), None)
    if node is None or node.get("status") != "waiting":
        return  # answered already (a replayed event)
    hint = waiting_hint(execution_id, event)
    if not interactive:
        view.say(hint)
        return
    view.stop()
    try:
        console.print(Text.assemble((node_id, "bold"), f" asks: {data.get('prompt') or 'input'}"))
        for _ in range(3):
            answer = ask_for_answer(console, schema)
            try:
                api.post(
                    f"/api/v1/executions/{execution_id}/input",
                    json={"node_id": node_id, "data": answer},
                )
                return
            except CliError as error:
                console.print(Text(f"error: {error}", style="red"))
        console.print(Text(hint.strip().replace("answer with", "answer later with")))
    finally:
        view.restart()


def follow(
    api: Api,
    console: Console,
    execution_id: str,
    title: str,
    interactive: bool,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Show an execution's progress until it ends."""
    with ProgressView(console, title) as view:
        for event in events(api, execution_id):
            view.show(event)
            if on_event is not None:
                on_event(event)
            if event.get("type") == "node.waiting":
                answer_waiting_node(api, console, view, execution_id, event, interactive)


def stdin_is_terminal() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False
