"""Registered agents (issue #15): versioned definitions per tenant, their conversation
sessions, and chat.

Access follows the node presets' model (and so the workflows'): every member of the tenant
reads agents and registers one (the `write` scope); the creator owns an agent: only the
creator or a tenant admin saves new versions of it or deletes it. Chatting needs the
`execute` scope. Another tenant's agent or session is not found.

The tables and their access are shared (libs/common/agents.py): the workflow service reads them
when it dispatches a node naming an `agent_id` or `session_id`
(services/workflow/agent_dispatch.py).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import jsonschema
from fastapi import APIRouter, Path, Request, Response, status
from fastapi.responses import StreamingResponse
from heddle.v1 import ai_pb2, tool_pb2, workflow_pb2
from pydantic import BaseModel, Field, Strict
from sqlalchemy import update

from libs.common import agents as store
from libs.common import jsonutil
from libs.common.agents import AgentMessageRow, AgentRow, AgentSessionRow
from libs.common.db import utcnow
from libs.common.delegates import pinned_version, split_version
from libs.common.errors import (
    Conflict,
    HeddleError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from libs.common.jsontypes import JSON_NUMBER, JsonBool, JsonInt
from services.gateway.auth import Principal, Security
from services.gateway.clients import ServiceClients
from services.gateway.routes.common import (
    ERROR_RESPONSES,
    Caller,
    Clients,
    Guard,
    Paging,
    Tenant,
    checked_id,
    get_settings,
    insert_version,
    require_creator_or_admin,
)
from services.gateway.schemas import INT32_MAX, Page
from services.gateway.streams import sse_body

router = APIRouter(prefix="/api/v1", tags=["agents"], responses=ERROR_RESPONSES)

AgentType = Literal["react", "plan_execute", "chat"]
AgentStatus = Literal["active", "paused", "retired"]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class MemoryPolicy(BaseModel):
    last_n: Annotated[int, Field(ge=0, le=100_000), JSON_NUMBER] | None = Field(
        default=None, description="Keep at most the newest N messages."
    )
    max_tokens: Annotated[int, Field(ge=1, le=10_000_000), JSON_NUMBER] | None = Field(
        default=None,
        description="Keep the newest messages that fit this many tokens (estimated at 4 "
        "characters a token).",
    )
    summary: JsonBool = Field(
        default=False,
        description="Summarise the messages the window drops into one system message "
        "(one model call; llm nodes).",
    )


class AgentIn(BaseModel):
    name: Name
    description: str = Field(default="", max_length=2000)
    instructions: str = Field(default="", max_length=100_000, description="Role / system text.")
    type: AgentType = "react"
    status: AgentStatus = "active"
    model: str = Field(min_length=1, max_length=200, description="A model the AI service has.")
    fallback_models: list[Name] = Field(default_factory=list, max_length=10)
    temperature: Annotated[float, Field(ge=0, le=2), Strict()] | None = None
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000), JSON_NUMBER] | None = None
    tools: list[Name] = Field(
        default_factory=list,
        max_length=100,
        description="Tool names the tool service lists, `agent:<id>[@<version>]` or "
        "`workflow:<id>[@<version>]` (a pinned version, else the current one).",
    )
    approval_tools: list[Name] = Field(
        default_factory=list,
        max_length=100,
        description="Tools of `tools` whose every call waits for a person to approve, edit "
        "or reject it (POST /executions/{id}/input; the node.waiting event names the call).",
    )
    memory: MemoryPolicy = Field(default_factory=MemoryPolicy)
    max_steps: JsonInt = Field(default=10, ge=1, le=1000)
    output_schema: dict[str, Any] | None = Field(
        default=None, description="A JSON Schema the final answer must match."
    )


class AgentOut(AgentIn):
    id: str
    version: int
    created_by: str
    created_at: dt.datetime


class MessageIn(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=100_000)


class SessionIn(BaseModel):
    title: str = Field(default="", max_length=200)
    messages: list[MessageIn] = Field(
        default_factory=list,
        max_length=10_000,
        description="A history to start from (e.g. a conversation carried over).",
    )


class MessageOut(BaseModel):
    seq: int
    role: str
    content: str
    execution_id: str
    created_at: dt.datetime


class SessionOut(BaseModel):
    id: str
    agent_id: str
    title: str
    message_count: int
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime


class SessionDetail(SessionOut):
    messages: list[MessageOut]


class ChatIn(BaseModel):
    message: str = Field(min_length=1, max_length=100_000)
    session_id: str | None = Field(
        default=None, description="Continue this session; without it a new one is made."
    )


def _out(row: AgentRow) -> AgentOut:
    return AgentOut(
        **row.definition,
        id=row.id,
        version=row.version,
        name=row.name,
        status=row.status,  # type: ignore[arg-type]
        created_by=row.created_by,
        created_at=row.created_at,
    )


def _session_out(row: AgentSessionRow) -> SessionOut:
    return SessionOut(
        id=row.id,
        agent_id=row.agent_id,
        title=row.title,
        message_count=row.message_count,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _message_out(row: AgentMessageRow) -> MessageOut:
    return MessageOut(
        seq=row.seq,
        role=row.role,
        content=row.content,
        execution_id=row.execution_id,
        created_at=row.created_at,
    )


async def _check(body: AgentIn, clients: Clients, guard: Security, tenant: str) -> None:
    """Every problem of the definition, located: unknown models and tools, an output schema
    that is not a JSON Schema (checked against its meta-schema)."""
    problems: list[dict[str, Any]] = []
    if body.output_schema is not None:
        problem = schema_problem(body.output_schema)
        if problem is not None:
            problems.append(problem)
    models = await clients.call(clients.ai.ListModels, ai_pb2.ListModelsRequest())
    known_models = {model.name for model in models.models}
    for field, name in [("model", body.model)] + [
        (f"fallback_models[{i}]", m) for i, m in enumerate(body.fallback_models)
    ]:
        if name not in known_models:
            problems.append({"field": field, "message": f"unknown model {name!r}"})
    plain = [(i, t) for i, t in enumerate(body.tools) if ":" not in t]
    if plain:
        tools = await clients.call(clients.tool.ListTools, tool_pb2.ListToolsRequest())
        known_tools = {tool.name for tool in tools.tools}
        for i, name in plain:
            if name not in known_tools:
                problems.append({"field": f"tools[{i}]", "message": f"unknown tool {name!r}"})
    for i, name in enumerate(body.tools):
        kind, _, ref = name.partition(":")
        if not ref:
            continue
        if kind == "agent":
            # agent:<id> or agent:<id>@<version>: an agent of this tenant (that version).
            agent_id, _, version = ref.partition("@")
            refused = await _agent_problem(guard, tenant, agent_id, version)
            if refused:
                problems.append({"field": f"tools[{i}]", "message": refused})
        elif kind == "workflow":
            # workflow:<id> or workflow:<id>@<version>: a workflow of this tenant (that version).
            workflow_id, version = split_version(ref)
            refused = await _workflow_problem(clients, tenant, workflow_id, version)
            if refused:
                problems.append({"field": f"tools[{i}]", "message": refused})
        else:
            problems.append(
                {"field": f"tools[{i}]", "message": f"unknown tool kind {kind!r} in {name!r}"}
            )
    for i, name in enumerate(body.approval_tools):
        if name not in body.tools:
            problems.append(
                {"field": f"approval_tools[{i}]", "message": f"{name!r} is not one of tools"}
            )
    if problems:
        raise InvalidArgument(
            "the agent definition has problems: "
            + "; ".join(f"{p['field']}: {p['message']}" for p in problems),
            details=problems,
        )


def schema_problem(schema: dict[str, Any]) -> dict[str, Any] | None:
    """Why schema is not a JSON Schema (checked against the meta-schema of its `$schema`
    dialect, 2020-12 without one), located; None when it is one."""
    dialect = schema.get("$schema")
    if dialect is not None and (
        not isinstance(dialect, str)
        # default=None: None for a dialect jsonschema does not know (typed as a class only)
        or jsonschema.validators.validator_for(schema, default=None) is None  # type: ignore[arg-type]
    ):
        return {"field": "output_schema.$schema", "message": f"unknown $schema {dialect!r}"}
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
    except jsonschema.SchemaError as error:
        return {
            "field": "output_schema" + "".join(f".{p}" for p in error.absolute_path),
            "message": f"not a JSON Schema: {error.message}",
        }
    return None


async def _agent_problem(guard: Security, tenant: str, agent_id: str, version: str) -> str:
    """Why agent_id (at version, "" for the current one) cannot be delegated to; "" when it
    can."""
    try:
        rows = await _versions(guard, tenant, agent_id)
    except NotFound:
        return f"unknown agent {agent_id!r}"
    if version and (not version.isdigit() or int(version) not in {r.version for r in rows}):
        return f"agent {agent_id!r} has no version {version!r}"
    return ""


async def _workflow_problem(clients: Clients, tenant: str, workflow_id: str, version: str) -> str:
    """Why workflow_id (at version, "" for its latest) cannot be an agent's tool; "" when it
    can."""
    try:
        await clients.call(
            clients.workflow.GetWorkflow,
            workflow_pb2.GetWorkflowRequest(
                id=checked_id(workflow_id, "workflow"), tenant_id=tenant
            ),
        )
    except NotFound:
        return f"unknown workflow {workflow_id!r}"
    try:
        number = pinned_version(version)
    except ValueError:
        return f"workflow {workflow_id!r} has no version {version!r}"
    if number is not None:
        try:
            await clients.call(
                clients.workflow.GetWorkflow,
                workflow_pb2.GetWorkflowRequest(id=workflow_id, version=number, tenant_id=tenant),
            )
        except NotFound:
            return f"workflow {workflow_id!r} has no version {version!r}"
    return ""


def _definition(body: AgentIn) -> dict[str, Any]:
    return body.model_dump(mode="json", exclude={"name", "status"})


async def _versions(guard: Security, tenant: str, agent_id: str) -> list[AgentRow]:
    agent_id = checked_id(agent_id, "agent")
    async with guard.db.session() as session:
        rows = await store.agent_versions(session, tenant, agent_id)
    if not rows:
        raise NotFound(f"agent {agent_id!r} not found")
    return rows


@router.get("/agents", summary="Registered agents (current versions)")
async def list_agents(
    tenant: Tenant, paging: Paging, caller: Caller, guard: Guard
) -> Page[AgentOut]:
    guard.require(caller, "read_catalog")
    async with guard.db.session() as session:
        rows, total = await store.list_agents(
            session, tenant, (paging.page - 1) * paging.page_size, paging.page_size
        )
        items = [_out(row) for row in rows]
    return Page[AgentOut](items=items, page=paging.page, page_size=paging.page_size, total=total)


@router.post("/agents", status_code=status.HTTP_201_CREATED, summary="Register an agent")
async def create_agent(
    body: AgentIn,
    request: Request,
    response: Response,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
) -> AgentOut:
    guard.require(caller, "create_workflow")
    await _check(body, clients, guard, tenant)
    row = AgentRow(
        id=str(uuid.uuid4()),
        version=1,
        tenant_id=tenant,
        name=body.name,
        status=body.status,
        definition=_definition(body),
        created_by=caller.id,
        created_at=utcnow(),
    )
    async with guard.db.transaction() as session:
        session.add(row)
    request.state.audit_object_id = row.id
    response.headers["Location"] = f"/api/v1/agents/{row.id}"
    return _out(row)


@router.get("/agents/{agent_id}", summary="An agent's current version")
async def get_agent(agent_id: str, tenant: Tenant, caller: Caller, guard: Guard) -> AgentOut:
    guard.require(caller, "read_catalog")
    return _out((await _versions(guard, tenant, agent_id))[0])


@router.get("/agents/{agent_id}/versions", summary="Every version of an agent, newest first")
async def list_agent_versions(
    agent_id: str, tenant: Tenant, caller: Caller, guard: Guard
) -> list[AgentOut]:
    guard.require(caller, "read_catalog")
    return [_out(row) for row in await _versions(guard, tenant, agent_id)]


@router.get("/agents/{agent_id}/versions/{version}", summary="One version of an agent")
async def get_agent_version(
    agent_id: str,
    version: Annotated[int, Path(ge=1, le=INT32_MAX)],
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
) -> AgentOut:
    guard.require(caller, "read_catalog")
    for row in await _versions(guard, tenant, agent_id):
        if row.version == version:
            return _out(row)
    raise NotFound(f"agent {agent_id!r} has no version {version}")


@router.put("/agents/{agent_id}", summary="Save a new version of an agent (version + 1)")
async def update_agent(
    agent_id: str,
    body: AgentIn,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
) -> AgentOut:
    rows = await _versions(guard, tenant, agent_id)
    require_creator_or_admin(caller, rows[-1].created_by, "agent")
    await _check(body, clients, guard, tenant)
    current = rows[0]
    row = AgentRow(
        id=current.id,
        version=current.version + 1,
        tenant_id=tenant,
        name=body.name,
        status=body.status,
        definition=_definition(body),
        chat_workflow_id=current.chat_workflow_id,
        created_by=caller.id,
        created_at=utcnow(),
    )
    await insert_version(guard, row, "agent")
    return _out(row)


@router.delete(
    "/agents/{agent_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete an agent, its versions and its sessions",
)
async def delete_agent(agent_id: str, tenant: Tenant, caller: Caller, guard: Guard) -> None:
    rows = await _versions(guard, tenant, agent_id)
    require_creator_or_admin(caller, rows[-1].created_by, "agent")
    async with guard.db.transaction() as session:
        await store.delete_agent(session, tenant, rows[0].id)


# ---- sessions -----------------------------------------------------------------------------


async def _session(guard: Security, tenant: str, agent_id: str, session_id: str) -> AgentSessionRow:
    session_id = checked_id(session_id, "session")
    async with guard.db.session() as session:
        row = await store.get_session(session, tenant, session_id)
    if row is None or row.agent_id != agent_id:
        raise NotFound(f"session {session_id!r} not found")
    return row


@router.post(
    "/agents/{agent_id}/sessions",
    status_code=status.HTTP_201_CREATED,
    summary="Start a conversation session with an agent",
)
async def create_agent_session(
    agent_id: str,
    body: SessionIn,
    request: Request,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
) -> SessionOut:
    guard.require(caller, "run_agent")
    rows = await _versions(guard, tenant, agent_id)
    row = await _new_session(
        guard, tenant, rows[0].id, body.title, caller, [(m.role, m.content) for m in body.messages]
    )
    request.state.audit_object_id = row.id
    return _session_out(row)


async def _new_session(
    guard: Security,
    tenant: str,
    agent_id: str,
    title: str,
    caller: Principal,
    messages: list[tuple[str, str]] | None = None,
) -> AgentSessionRow:
    now = utcnow()
    row = AgentSessionRow(
        id=str(uuid.uuid4()),
        tenant_id=tenant,
        agent_id=agent_id,
        title=title,
        message_count=0,
        created_by=caller.id,
        created_at=now,
        updated_at=now,
    )
    async with guard.db.transaction() as session:
        session.add(row)
        if messages:
            await session.flush()
            await store.append_messages(await session.connection(), row.id, messages, now=now)
            row.message_count = len(messages)
    return row


@router.get("/agents/{agent_id}/sessions", summary="An agent's sessions, latest first")
async def list_agent_sessions(
    agent_id: str, tenant: Tenant, paging: Paging, caller: Caller, guard: Guard
) -> Page[SessionOut]:
    guard.require(caller, "read_catalog")
    rows = await _versions(guard, tenant, agent_id)
    async with guard.db.session() as session:
        found, total = await store.list_sessions(
            session, tenant, rows[0].id, (paging.page - 1) * paging.page_size, paging.page_size
        )
        items = [_session_out(row) for row in found]
    return Page[SessionOut](items=items, page=paging.page, page_size=paging.page_size, total=total)


@router.get("/agents/{agent_id}/sessions/{session_id}", summary="A session with its messages")
async def get_agent_session(
    agent_id: str, session_id: str, tenant: Tenant, caller: Caller, guard: Guard
) -> SessionDetail:
    guard.require(caller, "read_catalog")
    agent_id = checked_id(agent_id, "agent")
    row = await _session(guard, tenant, agent_id, session_id)
    async with guard.db.session() as session:
        messages = await store.session_messages(session, row.id)
    return SessionDetail(
        **_session_out(row).model_dump(), messages=[_message_out(m) for m in messages]
    )


@router.delete(
    "/agents/{agent_id}/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a session and its messages",
)
async def delete_agent_session(
    agent_id: str, session_id: str, tenant: Tenant, caller: Caller, guard: Guard
) -> None:
    guard.require(caller, "run_agent")
    agent_id = checked_id(agent_id, "agent")
    row = await _session(guard, tenant, agent_id, session_id)
    if not caller.admin and row.created_by != caller.id:
        raise PermissionDenied("only the session's creator or a tenant admin may delete it")
    async with guard.db.transaction() as session:
        await store.delete_session(session, row.id)


# ---- chat ---------------------------------------------------------------------------------


def chat_workflow(agent: AgentRow) -> dict[str, Any]:
    """The one-node workflow a chat runs: the agent (its current version) on the message,
    in the session. A `chat` agent (no tools) is one completion: an `llm` node."""
    node_type = "llm" if agent.definition.get("type") == "chat" else "agent"
    return {
        "name": f"agent-chat-{agent.id}",
        "description": f"Chat with the agent {agent.name!r} (made by POST /agents/{{id}}/chat).",
        "inputs": {
            "message": {"type": "string", "required": True},
            "session_id": {"type": "string", "required": True},
        },
        "nodes": [
            {
                "id": "agent",
                "type": node_type,
                "params": {
                    "agent_id": agent.id,
                    "session_id": "{{ inputs.session_id }}",
                    "prompt": "{{ inputs.message }}",
                },
            }
        ],
        "outputs": {"text": "{{ agent.text }}"},
    }


async def _chat_workflow_id(clients: Clients, guard: Security, tenant: str, agent: AgentRow) -> str:
    if agent.chat_workflow_id:
        return agent.chat_workflow_id
    created = await clients.call(
        clients.workflow.CreateWorkflow,
        workflow_pb2.CreateWorkflowRequest(
            definition_json=jsonutil.dumps(chat_workflow(agent)), tenant_id=tenant, hidden=True
        ),
    )
    async with guard.db.transaction() as session:
        await session.execute(
            update(AgentRow)
            .where(AgentRow.id == agent.id, AgentRow.tenant_id == tenant)
            .values(chat_workflow_id=created.id)
        )
    return str(created.id)


@router.post(
    "/agents/{agent_id}/chat",
    summary="Send a message to an agent; its answer streams back (SSE)",
    description="Runs the agent on the message in the session (a new one without "
    "`session_id`; its id is the `x-session-id` header) and streams the execution's events "
    "as on /executions/{id}/events: `node.text_chunk` carries tokens (a `chat` agent), "
    "`agent.step` the steps; a tool call that needs approval is followed by a "
    "`user_input_required` frame {tool, arguments, key, ...} (answer it with POST "
    "/executions/{id}/input, or `send_input` on the WebSocket, which carries the same frames). "
    "Both turns are stored in the session.",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "SSE frames"}},
)
async def chat_with_agent(
    agent_id: str,
    body: ChatIn,
    request: Request,
    clients: Clients,
    tenant: Tenant,
    caller: Caller,
    guard: Guard,
) -> Response:
    execution_id, session_id = await start_chat(
        clients, guard, caller, agent_id, body.message, body.session_id
    )
    request.state.audit_object_id = agent_id
    events = clients.stream_events(execution_id, 0, tenant)
    return StreamingResponse(
        sse_body(events, get_settings(request).sse_heartbeat_s, interactive=True),
        media_type="text/event-stream",
        headers={
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
            "x-session-id": session_id,
            "x-execution-id": execution_id,
        },
    )


async def start_chat(
    clients: ServiceClients,
    guard: Security,
    caller: Principal,
    agent_id: str,
    message: str,
    session_id: str | None,
) -> tuple[str, str]:
    """Start the agent's chat run on message in the session (a new one when None): the
    execution's id and the session's. The HTTP route and the WebSocket's `send_input`
    {agent_id, message, session_id?} both start chats here."""
    guard.require(caller, "run_agent")
    tenant = caller.tenant_id
    rows = await _versions(guard, tenant, agent_id)
    agent = rows[0]
    if agent.status != "active":
        raise ConflictingStatus(f"agent {agent.id!r} is {agent.status}: it takes no new work")
    if session_id is not None:
        thread = await _session(guard, tenant, agent.id, session_id)
    else:
        thread = await _new_session(guard, tenant, agent.id, message[:200], caller)
    try:
        workflow_id = await _chat_workflow_id(clients, guard, tenant, agent)
        started = await clients.call(
            clients.workflow.StartExecution,
            workflow_pb2.StartExecutionRequest(
                workflow_id=workflow_id,
                inputs_json=jsonutil.dumps({"message": message, "session_id": thread.id}),
                idempotency_key=str(uuid.uuid4()),
                tenant_id=tenant,
                trigger="chat",
            ),
        )
    except HeddleError:
        if session_id is None:  # nothing half-written: the session made for this chat goes
            async with guard.db.transaction() as session:
                await store.delete_session(session, thread.id)
        raise
    return str(started.execution_id), thread.id


class ConflictingStatus(Conflict):
    """A paused or retired agent asked for new work."""
