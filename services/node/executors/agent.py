"""The agent node: a model that calls tools until it has an answer (ReAct loop), with every
step journaled.

Durability: each act of the loop is a journal entry — ``model_call`` (with the model's reply),
``tool_call`` (written BEFORE the tool runs), ``tool_result``, ``final`` — and the journal is
the attempt's checkpoint, reported with ``save_checkpoint`` after every entry, in order on the
attempt's work stream, append-only: a report carries the new entries and the journal length
they extend (``{"journal": {"at", "entries"}}``), never the whole journal. Before every act
with side effects (a tool call) the attempt waits until the workflow service has committed
the journal so far (an acknowledged write: the model's reply and the tool_call entry in one
commit); the other entries are not waited for
(the next acknowledged write, or the node's outcome behind them, covers them), which keeps a
step at one commit on its critical path. An attempt that gets a journal back (after its node
replica or the owning workflow replica died) replays it: journaled model calls are not made
again (their replies come from the journal), journaled tool results are not fetched again, and
a ``tool_call`` without its result is made again with the same idempotency key
``<execution>/<node>/<step>.<index>`` (the tool service passes it on, to MCP servers in the
request's ``_meta``). Each entry is published as an ``agent.step`` event and traced as an
``agent.<type>`` span.

Budgets (``budget: {tokens, steps}``) stop the run with ``budget_exceeded``; with
``output_schema`` the final answer is parsed as JSON and validated, sent back to the model
once to repair when invalid, and the node fails with the validation errors when still invalid.
``agent_type: plan_execute`` first asks for a plan (a JSON list of steps), runs each step as a
ReAct sub-loop, and re-plans once when a step fails.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from typing import Any

import jsonschema

from libs.common.child_ids import child_execution_id
from libs.common.delegates import is_delegate
from libs.common.node_types import NodeTypeSpec
from libs.common.tracing import tracer
from services.node.executors.ai import COMPLETION_PARAMS, provider_attempts
from services.node.executors.base import (
    Executor,
    NodeError,
    NodeRequest,
    NodeResult,
    Services,
    as_text,
    object_schema,
    save_checkpoint,
)
from services.node.metrics import (
    AGENT_BUDGET_EXCEEDED,
    AGENT_STEPS,
    AGENT_TENANT_TOKENS,
    AGENT_TOKENS,
)

_TRACER = tracer("node")
log = logging.getLogger(__name__)

TOOL_ITEM = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "requires_approval": {"type": "boolean", "default": False},
            },
            "required": ["name"],
            "additionalProperties": False,
        },
    ]
}

#: What a person submits (POST /executions/{id}/input) for a tool call that needs approval.
DECISION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "action": {"enum": ["approve", "edit", "reject"]},
        "arguments": {"type": "object", "description": "The edited arguments (edit)."},
        "message": {"type": "string", "description": "Why (reject): goes to the model."},
    },
    "required": ["action"],
}


class _AwaitApproval(Exception):
    def __init__(self, waiting: dict[str, Any]) -> None:
        super().__init__("waiting for a tool approval")
        self.waiting = waiting


_REPAIR = (
    "Your answer is not valid JSON for the required output schema. Problems: {problems}. "
    "Answer again with only the JSON value."
)
_PLAN = (
    "Before acting, write a plan: answer with only a JSON list of short steps (strings) that "
    "solve the task."
)


def _tool_call_parts(call: dict[str, Any], index: int) -> tuple[str, str, dict[str, Any]]:
    """(id, name, arguments) of a tool call in the flat or the OpenAI nested shape."""
    function = call.get("function") or {}
    name = call.get("name") or function.get("name") or ""
    arguments = call.get("arguments", function.get("arguments")) or {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            arguments = {"input": arguments}
    if not isinstance(arguments, dict):
        arguments = {"input": arguments}
    return str(call.get("id") or f"call_{index}"), str(name), arguments


def _tokens(usage: Any) -> int:
    if not isinstance(usage, dict):
        return 0
    total = usage.get("total_tokens")
    if isinstance(total, int):
        return total
    return sum(v for k, v in usage.items() if isinstance(v, int) and k.endswith("tokens"))


def budget_exceeded(
    what: str, limit: int, used: int, message: str | None = None, **details: Any
) -> NodeError:
    AGENT_BUDGET_EXCEEDED.labels(what).inc()
    return NodeError(
        "budget_exceeded",
        message or f"the agent run is over its {what} budget: {used} used, {limit} allowed",
        retryable=False,
        details={"budget": what, "limit": limit, "used": used, **details},
    )


class TenantTokens:
    """A tenant's model tokens of the UTC day, counted in the shared KV (``INCRBY`` on
    ``agent-tokens:<tenant>:<day>``, expiring at the day's end): checked before each model
    call of an agent run against the tenant's daily budget, charged after it."""

    def __init__(self, services: Services, tenant_id: str) -> None:
        self.kv = services.kv
        self.tenant = tenant_id or "default"
        self.limit = services.settings.tenant_daily_tokens(self.tenant)

    def _key(self) -> tuple[str, str, float]:
        now = dt.datetime.now(dt.UTC)
        day = now.date()
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
        # A minute past the day's end: a replica whose clock is a little behind still finds it.
        return (
            f"agent-tokens:{self.tenant}:{day.isoformat()}",
            day.isoformat(),
            (end - now).total_seconds() + 60,
        )

    async def check(self) -> None:
        if self.kv is None or not self.limit:
            return
        key, day, _ = self._key()
        used = int(await self.kv.get(key) or 0)
        if used >= self.limit:
            raise budget_exceeded(
                "tenant_tokens",
                self.limit,
                used,
                f"tenant {self.tenant!r} is over its daily agent token budget: {used} tokens "
                f"used on {day} (UTC), {self.limit} allowed",
                tenant_id=self.tenant,
                day=day,
            )

    async def charge(self, tokens: int) -> None:
        if self.kv is None or tokens <= 0:
            return
        key, _, ttl_s = self._key()
        AGENT_TENANT_TOKENS.labels(self.tenant).set(await self.kv.incr(key, tokens, ttl_s))


class Journal:
    """The agent run's steps so far: replayed from the checkpoint, extended durably.

    Not `durable` (HEDDLE_AGENT_JOURNAL=false): the steps are reported all the same, for
    their agent.step events, but marked ``"durable": false`` — the workflow service
    publishes them and keeps nothing — and no write is waited for: a crashed attempt starts
    the run again."""

    def __init__(
        self, request: NodeRequest, logs: list[dict[str, Any]], durable: bool = True
    ) -> None:
        self.request = request
        self.durable = durable
        self.logs = logs  # every step, acted or replayed, is also a log record
        saved = request.checkpoint or {}
        self.entries: list[dict[str, Any]] = list(saved.get("journal") or [])
        #: How many entries the workflow service has been sent (it holds the journal it
        #: handed back): each report carries only the entries after them.
        self._reported = len(self.entries)
        self._by_key = {self._key(entry): entry for entry in self.entries}
        #: Steps of this attempt replayed from the journal rather than acted (tests, logs).
        self.replayed = 0
        self._flushing: asyncio.Handle | None = None

    @staticmethod
    def _key(entry: dict[str, Any]) -> tuple[str, str, Any]:
        return (entry["type"], str(entry.get("step")), entry.get("index"))

    def get(self, type_: str, step: str, index: int | None = None) -> dict[str, Any] | None:
        entry = self._by_key.get((type_, step, index))
        if entry is not None:
            self.replayed += 1
            self._log(entry)
        return entry

    def _log(self, entry: dict[str, Any]) -> None:
        if entry["type"] != "model_call":
            summary = entry.get("name") or entry.get("text") or ""
            record = output_step(entry)
            self.logs.append(
                {"level": "info", "message": f"agent {entry['type']}: {summary}", "step": record}
            )

    @property
    def tokens(self) -> int:
        # A delegated child's tokens (on its tool_result) count toward this run's budget.
        return sum(
            int(e.get("tokens") or 0)
            for e in self.entries
            if e["type"] in ("model_call", "tool_result")
        )

    async def write(self, entry: dict[str, Any], acked: bool = False) -> None:
        """Append `entry` and report it; with `acked`, return once it is committed (before
        an act with side effects: a tool call). An entry not acknowledged is reported with
        what the run journals before the event loop next turns (the model's reply rides its
        tool_call's write: one report, not two), at the latest then or at flush()."""
        self.entries.append(entry)
        self._by_key[self._key(entry)] = entry
        self._log(entry)
        AGENT_STEPS.labels(entry["type"]).inc()
        if entry["type"] == "model_call":
            AGENT_TOKENS.inc(int(entry.get("tokens") or 0))
        if acked and self.durable:
            await save_checkpoint(self.request, self._report(), acked=True)
        elif acked:
            self.flush()  # sent before the act, not waited for
        elif self._flushing is None:
            self._flushing = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Report the entries not reported yet (also as the attempt ends: before its
        outcome). Not acknowledged: sent at once, as progress."""
        if len(self.entries) > self._reported and self.request.progress is not None:
            self.request.progress(self._report())

    def _report(self) -> dict[str, Any]:
        if self._flushing is not None:
            self._flushing.cancel()
            self._flushing = None
        # Append-only: the new entries and the length of the journal they extend (the
        # workflow service appends them to the stored journal, refusing a gap), and the
        # fields of an entry its agent.step event carries: the workflow service derives one
        # event per entry from them (the entries travel once, not beside their events).
        delta = {"at": self._reported, "entries": self.entries[self._reported :]}
        self._reported = len(self.entries)
        report: dict[str, Any] = {
            "journal": delta,
            "event": "agent.step",
            "step_fields": _EVENT_FIELDS,
        }
        if not self.durable:
            report["durable"] = False  # published only: nothing kept
        return report


#: What an entry's agent.step event carries (sent with each report: see Journal._report).
_EVENT_FIELDS = (
    "step",
    "index",
    "type",
    "name",
    "tokens",
    "duration_ms",
    "text",
    "child_execution_id",
)


class AgentExecutor(Executor):
    spec = NodeTypeSpec(
        type="agent",
        title="Agent",
        description="A model that calls tools until it has an answer (ReAct loop); every "
        "model and tool call is a journaled step, resumed after a crash.",
        category="ai",
        params_schema=object_schema(
            {
                **COMPLETION_PARAMS,
                "instructions": {
                    "type": "string",
                    "description": "System instructions.",
                    "x-multiline": True,
                },
                "prompt": {
                    "type": "string",
                    "description": "The task (templated).",
                    "x-multiline": True,
                },
                "input": {"description": "Alias of prompt; non-text values are sent as JSON."},
                "tools": {
                    "type": "array",
                    "items": TOOL_ITEM,
                    "default": [],
                    "description": "The tools the agent may call: names, or "
                    "{name, requires_approval}.",
                },
                "max_steps": {
                    "type": "integer",
                    "minimum": 1,
                    "default": 5,
                    "description": "Model calls before the agent stops.",
                },
                "budget": {
                    "type": "object",
                    "properties": {
                        "tokens": {"type": "integer", "minimum": 1},
                        "steps": {"type": "integer", "minimum": 1},
                    },
                    "additionalProperties": False,
                    "description": "Limits of this run: tokens (model usage) and steps "
                    "(model calls); over either, the node fails with budget_exceeded.",
                },
                "output_schema": {
                    "type": "object",
                    "description": "JSON Schema of the final answer: parsed as JSON, repaired "
                    "once by the model when invalid.",
                },
                "agent_type": {
                    "enum": ["react", "plan_execute", "chat"],
                    "default": "react",
                    "description": "react: tool loop; plan_execute: a plan, then a loop per "
                    "step (re-planned once on failure); chat: as react.",
                },
                # Set when the definition comes from the agent registry (resolved by the
                # workflow service before dispatch: services/workflow/agent_dispatch.py).
                "agent_id": {
                    "type": "string",
                    "minLength": 1,
                    "description": "A registered agent (/api/v1/agents): its definition fills "
                    "the params not given here.",
                },
                "agent_version": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Default: the current version.",
                },
                "session_id": {
                    "type": "string",
                    "minLength": 1,
                    "description": "A session of the agent: its history goes before the "
                    "prompt; both turns are stored.",
                },
                "memory": {
                    "type": "object",
                    "description": "Window policy: last_n, max_tokens, summary.",
                },
                "history": {
                    "type": "array",
                    "items": {"type": "object"},
                    "description": "Earlier messages ({role, content}) sent before the task "
                    "(set from the session).",
                },
                "history_dropped": {
                    "type": "array",
                    "items": {"type": "object"},
                    "description": "Messages the memory window left out (set by dispatch).",
                },
                # Set by dispatch for agent:<id> / workflow:<id> tools
                # (services/workflow/delegation.py).
                "delegates": {
                    "type": "object",
                    "additionalProperties": {"type": "object"},
                    "description": "The agent:/workflow: tools resolved: {ref: {name, "
                    "description, input_schema, workflow_id, kind, label}} (set by dispatch).",
                },
                "delegation_chain": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The agents that delegated to this one, outermost first "
                    "(set by the delegating agent).",
                },
                "agent_name": {
                    "type": "string",
                    "description": "This agent's name in a delegation chain (set by dispatch).",
                },
            },
            allOf=[
                {"anyOf": [{"required": ["model"]}, {"required": ["agent_id"]}]},
                {"anyOf": [{"required": ["prompt"]}, {"required": ["input"]}]},
            ],
        ),
        output_schema=object_schema(
            {
                "text": {"type": "string"},
                "output": {"description": "The parsed answer (with output_schema)."},
                "plan": {"type": "array", "items": {"type": "string"}},
                "usage": {"type": "object"},
                "steps": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "type": {"enum": ["model_call", "tool_call", "tool_result", "final"]},
                        },
                        "required": ["type"],
                    },
                },
            },
            required=["text", "steps"],
        ),
    )

    async def run(
        self, request: NodeRequest, params: dict[str, Any], services: Services
    ) -> NodeResult:
        if "model" not in params:
            raise NodeError(
                "ValidationError",
                f"agent node '{request.node_id}': no model (agent "
                f"'{params.get('agent_id')}' was not resolved to a definition)",
                details={"param": "model"},
            )
        run = _AgentRun(request, params, services)
        log.info(
            "agent run of %s/%s attempt %d: %d journaled steps",
            request.execution_id,
            request.node_id,
            request.attempt,
            len(run.journal.entries),
        )
        await run.prepare()
        try:
            if params["agent_type"] == "plan_execute":
                return await run.plan_execute()
            return await run.react()
        except _AwaitApproval as pending:
            # The journal (with the tool_call) is committed; the person's decision comes
            # back in the checkpoint and the next attempt resumes from the journal.
            return NodeResult(waiting=pending.waiting, logs=run.logs)
        finally:
            run.journal.flush()  # what is not reported yet goes before the outcome


class _AgentRun:
    """One attempt of one agent node: the loop, its journal and its limits."""

    def __init__(self, request: NodeRequest, params: dict[str, Any], services: Services) -> None:
        self.request = request
        self.params = params
        self.services = services
        self.logs: list[dict[str, Any]] = []
        self.journal = Journal(request, self.logs, services.settings.agent_journal)
        self.task = params["prompt"] if "prompt" in params else as_text(params.get("input"))
        self.history: list[dict[str, Any]] = list(params.get("history") or [])
        self.names = [t if isinstance(t, str) else t["name"] for t in params["tools"]]
        self.approvals = {
            t["name"] for t in params["tools"] if isinstance(t, dict) and t.get("requires_approval")
        }
        saved = request.checkpoint or {}
        self.decision = saved.get("approval") if isinstance(saved.get("approval"), dict) else None
        self.tools: list[dict[str, Any]] = []
        self.max_steps = min(params["max_steps"], services.settings.agent_max_steps)
        self.budget = params.get("budget") or {}
        self.tenant_tokens = TenantTokens(services, request.tenant_id)
        self.attempts = provider_attempts(request)
        self.model_calls = 0

    async def prepare(self) -> None:
        self.tools = await _tool_schemas(self.names, self.services, self.delegates)

    @property
    def delegates(self) -> dict[str, dict[str, Any]]:
        """The agent:/workflow: tools as dispatch resolved them, by reference."""
        return dict(self.params.get("delegates") or {})

    def reference(self, name: str) -> str:
        """The tools entry behind the name the model called (a delegate's function name)."""
        for ref, spec in self.delegates.items():
            if spec.get("name") == name:
                return ref
        return name

    # ---- steps --------------------------------------------------------------------------

    async def model_call(
        self, step: str, messages: list[dict[str, Any]], tools: bool = True
    ) -> dict[str, Any]:
        """The model's reply for `step`: from the journal, or called and journaled."""
        self.model_calls += 1
        limit = self.budget.get("steps")
        if limit is not None and self.model_calls > limit:
            raise budget_exceeded("steps", limit, self.model_calls)
        done = self.journal.get("model_call", step)
        if done is not None:
            return dict(done["reply"])
        limit = self.budget.get("tokens")
        if limit is not None and self.journal.tokens >= limit:
            raise budget_exceeded("tokens", limit, self.journal.tokens)
        await self.tenant_tokens.check()
        # What the run journaled so far (the last tool_result) goes out before the call.
        self.journal.flush()
        started = time.perf_counter()
        with _TRACER.start_as_current_span(
            "agent.model_call", attributes={"heddle.agent.step": step}
        ) as span:
            try:
                reply = await self.services.ai.complete(
                    model=self.params["model"],
                    prompt=None,
                    system=self.params.get("instructions"),
                    temperature=self.params.get("temperature"),
                    max_tokens=self.params.get("max_tokens"),
                    provider=self.params.get("provider"),
                    tools=(self.tools or None) if tools else None,
                    messages=messages,
                    max_attempts=self.attempts,
                )
            except NodeError as exc:
                # the steps so far belong to the run's logs as much as the failed call's
                exc.logs = [*self.logs, *(exc.logs or [])] or None
                raise
            tokens = _tokens(reply.get("usage"))
            span.set_attribute("heddle.agent.tokens", tokens)
        # Charged before it is journaled: a crash between the two pays the call again on
        # resume, and counts it again.
        await self.tenant_tokens.charge(tokens)
        self.logs.extend(reply.get("logs") or [])
        kept = {
            "text": reply.get("text") or "",
            "tool_calls": list(reply.get("tool_calls") or []),
            "usage": reply.get("usage") or {},
            "model": reply.get("model") or "",
        }
        await self.journal.write(
            {
                "type": "model_call",
                "step": step,
                "reply": kept,
                "tokens": tokens,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
        )
        limit = self.budget.get("tokens")
        if limit is not None and self.journal.tokens > limit:
            raise budget_exceeded("tokens", limit, self.journal.tokens)
        return kept

    async def tool_call(self, step: str, index: int, call: dict[str, Any]) -> tuple[str, str, Any]:
        """(id, name, result) of one tool call of `step`: journaled before it is made."""
        call_id, name, arguments = _tool_call_parts(call, index)
        called = self.journal.get("tool_call", step, index)
        done = self.journal.get("tool_result", step, index)
        if done is not None:
            return call_id, name, done["result"]
        if called is not None and isinstance(called.get("arguments"), dict):
            # The journaled arguments are the call's (a fork may have edited them).
            arguments = called["arguments"]
        key = f"{self.request.execution_id}/{self.request.node_id}/{step}.{index}"
        ref = self.reference(name)
        # A delegated run's child execution id follows from the key: named before it starts.
        child = (
            {"child_execution_id": child_execution_id(self.request.tenant_id, key)}
            if ref in self.delegates
            else {}
        )
        if called is None:
            await self.journal.write(
                {
                    "type": "tool_call",
                    "step": step,
                    "index": index,
                    "id": call_id,
                    "name": name,
                    "arguments": arguments,
                    "key": key,
                    **child,
                },
                acked=True,  # committed (with the model's reply before it) before the tool acts
            )
        approval: dict[str, Any] = {}
        if ref in self.approvals:
            decision = self.decision if (self.decision or {}).get("key") == key else None
            if decision is None:
                raise _AwaitApproval(
                    {
                        "prompt": f"The agent wants to call the tool '{name}': approve, edit "
                        "the arguments, or reject.",
                        "schema": DECISION_SCHEMA,
                        "approval": {
                            "key": key,
                            "tool": name,
                            "arguments": arguments,
                            "step": step,
                            "index": index,
                        },
                    }
                )
            approval = {"approval": decision["action"]}
            if decision["action"] == "edit":
                arguments = dict(decision["arguments"])
                approval["arguments"] = arguments
        started = time.perf_counter()
        tokens: dict[str, int] = {}
        if approval.get("approval") == "reject":
            reason = (self.decision or {}).get("message") or "no reason given"
            result: Any = {"error": f"a person rejected this call of '{name}': {reason}"}
        else:
            with _TRACER.start_as_current_span(
                "agent.tool_call",
                attributes={
                    "heddle.agent.step": step,
                    "heddle.tool": name,
                    **{f"heddle.{k}": v for k, v in child.items()},
                },
            ):
                if ref in self.delegates:
                    result, used = await self.delegate(ref, arguments, key)
                    tokens = {"tokens": used} if used else {}
                else:
                    result = await _call_tool(name, arguments, self.names, self.services, key)
        await self.journal.write(
            {
                "type": "tool_result",
                "step": step,
                "index": index,
                "id": call_id,
                "name": name,
                "result": result,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                **approval,
                **child,
                **tokens,
            }
        )
        limit = self.budget.get("tokens")
        if tokens and limit is not None and self.journal.tokens > limit:
            raise budget_exceeded("tokens", limit, self.journal.tokens)
        return call_id, name, result

    async def delegate(self, ref: str, arguments: dict[str, Any], key: str) -> tuple[Any, int]:
        """(result, the child's tokens) of an agent:/workflow: tool: a child execution keyed
        by the step. A delegated agent's answer is its text; a workflow's, its outputs."""
        spec = self.delegates[ref]
        inputs = dict(arguments)
        chain = [*(self.params.get("delegation_chain") or []), self.label]
        if spec.get("kind") == "agent":
            target = [*chain, str(spec.get("label") or ref)]
            limit = self.services.settings.agent_max_delegation_depth
            if len(target) - 1 > limit:
                raise delegation_depth_exceeded(target, limit)
            inputs = {"task": as_text(arguments.get("task", arguments)), "chain": chain}
        try:
            outputs = await self.services.workflows.run_child(
                workflow_id=str(spec["workflow_id"]),
                inputs=inputs,
                idempotency_key=key,
                parent_execution_id=self.request.execution_id,
                parent_node_id=self.request.node_id,
                tenant_id=self.request.tenant_id,
                version=int(spec.get("version") or 0),  # workflow:<id>@<version>: pinned
            )
        except NodeError as exc:
            details = exc.details if isinstance(exc.details, dict) else {}
            text = str(details.get("message") or exc.message)
            # The child failed as "node 'agent' failed: delegation_depth_exceeded: <chain>":
            # the loop's innermost agent stopped it, and every agent above fails the same way.
            marker = "delegation_depth_exceeded: "
            if details.get("error_type") == "delegation_depth_exceeded" or marker in text:
                raise NodeError(
                    "delegation_depth_exceeded",
                    text.split(marker, 1)[-1],
                    retryable=False,
                    details=details,
                ) from exc
            if exc.type == "SubworkflowError" and "call depth" in exc.message:
                # A chain through saved workflows (they carry no delegation chain) reached
                # the workflow service's max_call_depth: as clear an error as a loop's.
                target = [*chain, str(spec.get("label") or ref)]
                raise NodeError(
                    "delegation_depth_exceeded",
                    f"delegation stopped by the call depth limit: {' -> '.join(target)} "
                    f"({exc.message})",
                    retryable=False,
                    details={"chain": target},
                ) from exc
            if exc.retryable:
                raise
            return {"error": exc.message}, 0
        usage = outputs.get("usage") if spec.get("kind") == "agent" else None
        used = _tokens(usage)
        if spec.get("kind") == "agent":
            return outputs.get("text", outputs), used
        return outputs, used

    @property
    def label(self) -> str:
        """This agent in a delegation chain: its name, else its id, else the node's."""
        return str(
            self.params.get("agent_name") or self.params.get("agent_id") or self.request.node_id
        )

    async def final(self, step: str, text: str, **extra: Any) -> None:
        if self.journal.get("final", step) is None:
            await self.journal.write({"type": "final", "step": step, "text": text, **extra})

    # ---- loops --------------------------------------------------------------------------

    async def loop(
        self, prefix: str, messages: list[dict[str, Any]], max_steps: int
    ) -> tuple[str, bool]:
        """A ReAct loop: (the last text, whether the model answered within max_steps)."""
        text = ""
        for number in range(max_steps):
            step = f"{prefix}{number}"
            reply = await self.model_call(step, messages)
            text = reply["text"]
            calls = reply["tool_calls"]
            if not calls:
                return text, True
            messages.append({"role": "assistant", "content": text, "tool_calls": calls})
            for index, call in enumerate(calls):
                call_id, name, result = await self.tool_call(step, index, call)
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": call_id,
                        "name": name,
                        "content": as_text(result),
                    }
                )
        return text, False

    async def react(self) -> NodeResult:
        messages = [*self.history, {"role": "user", "content": self.task}]
        text, answered = await self.loop("", messages, self.max_steps)
        if not answered:
            self.logs.append(
                {"level": "warning", "message": f"agent stopped after {self.max_steps} steps"}
            )
            await self.final("end", text, stopped="max_steps")
            return self.result(text)
        output, text = await self.structured(messages, text, str(self.max_steps))
        await self.final("end", text)
        return self.result(text, output)

    async def plan_execute(self) -> NodeResult:
        plan = await self.plan("plan", [])
        results: list[str] = []
        replanned = False
        number = 0
        while number < len(plan):
            item = plan[number]
            messages = [
                {
                    "role": "user",
                    "content": f"Task: {self.task}\nPlan: {json.dumps(plan)}\n"
                    f"Done so far: {json.dumps(results)}\nNow do step {number + 1}: {item}",
                }
            ]
            prefix = f"{'r' if replanned else 'p'}{number}."
            try:
                text, answered = await self.loop(prefix, messages, self.max_steps)
                if not answered:
                    raise NodeError("StepFailed", f"plan step {number + 1} did not finish")
            except NodeError as exc:
                if replanned or exc.type == "budget_exceeded" or exc.retryable:
                    raise
                replanned = True
                plan = await self.plan("replan", [f"step {number + 1} failed: {exc.message}"])
                results, number = [], 0
                continue
            results.append(text)
            number += 1
        final_messages = [
            {
                "role": "user",
                "content": f"Task: {self.task}\nResults of the plan's steps: "
                f"{json.dumps(results)}\nGive the final answer.",
            }
        ]
        reply = await self.model_call("answer", final_messages, tools=False)
        output, text = await self.structured(final_messages, reply["text"], "answer")
        await self.final("end", text)
        return self.result(text, output, plan=plan)

    async def plan(self, step: str, notes: list[str]) -> list[str]:
        content = f"Task: {self.task}\n{_PLAN}"
        if notes:
            content += "\nThe previous plan failed: " + "; ".join(notes)
        reply = await self.model_call(step, [{"role": "user", "content": content}], tools=False)
        try:
            plan = json.loads(reply["text"])
        except ValueError:
            plan = None
        if not isinstance(plan, list) or not plan:
            raise NodeError(
                "ValidationError",
                f"the model's plan is not a non-empty JSON list: {reply['text'][:200]!r}",
                details={"plan": reply["text"][:2000]},
            )
        return [as_text(item) for item in plan]

    async def structured(
        self, messages: list[dict[str, Any]], text: str, step: str
    ) -> tuple[Any, str]:
        """(parsed output, text) with output_schema (repaired once); (None, text) without."""
        schema = self.params.get("output_schema")
        if schema is None:
            return None, text
        problems = _problems(schema, text)
        if not problems:
            return json.loads(text), text
        messages.append({"role": "assistant", "content": text})
        messages.append({"role": "user", "content": _REPAIR.format(problems="; ".join(problems))})
        reply = await self.model_call(f"repair{step}", messages, tools=False)
        text = reply["text"]
        problems = _problems(schema, text)
        if problems:
            raise NodeError(
                "OutputValidationError",
                "the agent's answer does not match output_schema after one repair: "
                + "; ".join(problems),
                details={"problems": problems, "text": text[:2000]},
            )
        return json.loads(text), text

    def result(self, text: str, output: Any = None, plan: list[str] | None = None) -> NodeResult:
        steps = [output_step(e) for e in self.journal.entries if e["type"] != "model_call"]
        if self.journal.replayed:
            self.logs.append(
                {
                    "level": "info",
                    "message": f"agent resumed: {self.journal.replayed} steps from its journal",
                }
            )
        value: dict[str, Any] = {
            "text": text,
            "steps": steps,
            "usage": {"total_tokens": self.journal.tokens},
        }
        if output is not None:
            value["output"] = output
        if plan is not None:
            value["plan"] = plan
        return NodeResult(output=value, logs=self.logs)


def output_step(entry: dict[str, Any]) -> dict[str, Any]:
    """A journal entry as the node's output lists it (today's shape: no step bookkeeping)."""
    return {k: v for k, v in entry.items() if k not in ("step", "index", "key", "duration_ms")}


def _problems(schema: dict[str, Any], text: str) -> list[str]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        return [f"not JSON: {exc}"]
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/' + '/'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in sorted(validator.iter_errors(value), key=lambda e: str(e.absolute_path))
    ]


def delegation_depth_exceeded(chain: list[str], limit: int) -> NodeError:
    """The error of a delegation loop, naming the chain (A -> B -> A -> B)."""
    message = f"delegation depth {len(chain) - 1} exceeded (limit {limit}): " + " -> ".join(chain)
    return NodeError(
        "delegation_depth_exceeded",
        message,
        retryable=False,
        details={"chain": chain, "limit": limit, "message": message},
    )


async def _tool_schemas(
    names: list[str], services: Services, delegates: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    if not names:
        return []
    resolved: dict[str, dict[str, Any]] = {
        ref: {k: spec[k] for k in ("name", "description", "input_schema") if k in spec}
        for ref, spec in (delegates or {}).items()
    }
    unresolved = [n for n in names if is_delegate(n) and n not in resolved]
    if unresolved:
        raise NodeError(
            "ValidationError",
            f"agent and workflow tools not resolved by dispatch: {', '.join(unresolved)}",
            retryable=False,
            details={"unknown_tools": unresolved},
        )
    delegated = {name: resolved[name] for name in names if name in resolved}
    if len(delegated) == len(names):
        return [delegated[name] for name in names]
    available = {tool.get("name"): tool for tool in await services.tools.list()}
    available.update(delegated)
    missing = [name for name in names if name not in available]
    if missing:
        raise NodeError(
            "ValidationError",
            f"unknown tools: {', '.join(missing)}",
            retryable=False,
            details={"unknown_tools": missing},
        )
    return [available[name] for name in names]


async def _call_tool(
    name: str,
    arguments: dict[str, Any],
    allowed: list[str],
    services: Services,
    key: str,
) -> Any:
    # The model's mistakes (unknown tool, bad arguments) go back to it as the tool's
    # answer so it can correct itself; infrastructure failures fail the node for a retry.
    if name not in allowed:
        return {"error": f"unknown tool '{name}'; available: {', '.join(allowed)}"}
    try:
        return await services.tools.call(name, arguments, idempotency_key=key)
    except NodeError as exc:
        if exc.retryable:
            raise
        return {"error": exc.message}
