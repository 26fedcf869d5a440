"""Every endpoint x every kind of caller: the right status, and nothing of another tenant's.

Callers: no credential, a malformed/unknown key, an expired key, an admin of another tenant,
a member of the tenant without any role on the workflow, each workflow role, a tenant admin.
"Allowed" means the request got past authentication and authorization: any status but
401/403/404 (and never a 5xx); the operation itself may still answer 409 or 422.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from libs.cli.stack import Stack
from services.gateway.roles import ROLE_ACTIONS
from tests.security.support import (
    HELLO,
    ROLE_NAMES,
    SECRET_WORKFLOW_NAME,
    bearer,
    create_workflow,
    grant_roles,
    new_key,
    principals,
    wait_final,
)

pytestmark = pytest.mark.parametrize(
    "stack", [{"rate_limit_burst": 100_000, "rate_limit_per_s": 10_000}], indirect=True
)

Request = tuple[str, str, Any]


@dataclass
class Context:
    stack: Stack
    admin: httpx.AsyncClient
    ids: dict[str, str]
    workflow_id: str
    execution_id: str
    schedule_id: str

    async def fresh_workflow(self) -> str:
        workflow_id = await create_workflow(self.admin)
        await grant_roles(self.admin, workflow_id, self.ids)
        return workflow_id

    async def fresh_schedule(self) -> str:
        response = await self.admin.post("/api/v1/schedules", json=self.schedule_body())
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def schedule_body(self) -> dict[str, Any]:
        return {"workflow_id": self.workflow_id, "cron": "0 0 1 1 *", "name": "yearly"}


@dataclass(frozen=True)
class Endpoint:
    name: str
    #: a workflow action (read, execute, update, delete, share), "member" or "admin"
    needs: str
    #: whether it names an object of the default tenant (another tenant gets a 404)
    targets_object: bool
    build: Callable[[Context], Awaitable[Request]]


def _static(method: str, path: str, body: Any = None) -> Callable[[Context], Awaitable[Request]]:
    async def build(ctx: Context) -> Request:
        return method, path.format(w=ctx.workflow_id, e=ctx.execution_id, s=ctx.schedule_id), body

    return build


async def _delete_workflow(ctx: Context) -> Request:
    return "DELETE", f"/api/v1/workflows/{await ctx.fresh_workflow()}", None


async def _delete_grant(ctx: Context) -> Request:
    response = await ctx.admin.put(
        f"/api/v1/workflows/{ctx.workflow_id}/grants",
        json={"principal": "user:nobody", "role": "viewer"},
    )
    assert response.status_code == 200, response.text
    return "DELETE", f"/api/v1/workflows/{ctx.workflow_id}/grants/user:nobody", None


async def _create_schedule(ctx: Context) -> Request:
    return "POST", "/api/v1/schedules", ctx.schedule_body()


async def _update_schedule(ctx: Context) -> Request:
    return "PUT", f"/api/v1/schedules/{ctx.schedule_id}", ctx.schedule_body()


async def _delete_schedule(ctx: Context) -> Request:
    return "DELETE", f"/api/v1/schedules/{await ctx.fresh_schedule()}", None


async def _revoke_key(ctx: Context) -> Request:
    _, principal = await new_key(ctx.stack, name="doomed")
    return "DELETE", f"/api/v1/api-keys/{principal.removeprefix('key:')}", None


async def _delete_secret(ctx: Context) -> Request:
    name = f"S_{uuid.uuid4().hex[:8]}"
    response = await ctx.admin.post("/api/v1/secrets", json={"name": name, "value": "v" * 12})
    assert response.status_code == 201, response.text
    return "DELETE", f"/api/v1/secrets/{name}", None


async def _create_preset(ctx: Context) -> Request:
    body = {"node_type": "noop", "name": f"p-{uuid.uuid4().hex[:8]}", "params": {}}
    return "POST", "/api/v1/node-presets", body


async def _read_preset(ctx: Context) -> Request:
    response = await ctx.admin.post(
        "/api/v1/node-presets",
        json={"node_type": "noop", "name": f"p-{uuid.uuid4().hex[:8]}", "params": {}},
    )
    assert response.status_code == 201, response.text
    return "GET", f"/api/v1/node-presets/{response.json()['id']}", None


def _agent_body() -> dict[str, Any]:
    return {"name": f"a-{uuid.uuid4().hex[:8]}", "model": "echo", "type": "chat"}


async def _fresh_agent(ctx: Context) -> str:
    response = await ctx.admin.post("/api/v1/agents", json=_agent_body())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _on_agent(
    method: str, suffix: str = "", body: Any = None
) -> Callable[[Context], Awaitable[Request]]:
    """A request on a fresh agent of the default tenant (any member may use it)."""

    async def build(ctx: Context) -> Request:
        return method, f"/api/v1/agents/{await _fresh_agent(ctx)}{suffix}", body

    return build


def _on_file(method: str, suffix: str = "") -> Callable[[Context], Awaitable[Request]]:
    """A request on a fresh file of the default tenant (any member may use it)."""

    async def build(ctx: Context) -> Request:
        uploaded = await ctx.admin.post("/api/v1/files", content=b"data")
        assert uploaded.status_code == 201, uploaded.text
        return method, f"/api/v1/files/{uploaded.json()['id']}{suffix}", None

    return build


#: A webhook subscription of the default tenant per context (reads and updates share it).
_WEBHOOKS: dict[int, str] = {}
_WEBHOOK_BODY = {"url": "http://127.0.0.1:9/hook", "events": ["execution.failed"]}


def _on_webhook(
    method: str, suffix: str = "", body: Any = None, *, fresh: bool = False
) -> Callable[[Context], Awaitable[Request]]:
    """A request on a webhook subscription of the default tenant (admins only)."""

    async def build(ctx: Context) -> Request:
        webhook_id = None if fresh else _WEBHOOKS.get(id(ctx))
        if webhook_id is None:
            created = await ctx.admin.post("/api/v1/webhooks", json=_WEBHOOK_BODY)
            assert created.status_code == 201, created.text
            webhook_id = str(created.json()["id"])
            if not fresh:
                _WEBHOOKS[id(ctx)] = webhook_id
        return method, f"/api/v1/webhooks/{webhook_id}{suffix}", body

    return build


#: The reference of a large execution input, per context (made once: a run per caller is slow).
_ARTIFACT_REFS: dict[int, str] = {}


def _on_artifact(method: str) -> Callable[[Context], Awaitable[Request]]:
    """A request on an artifact of the default tenant (a claim-checked execution input)."""

    async def build(ctx: Context) -> Request:
        if id(ctx) not in _ARTIFACT_REFS:
            definition = {
                **HELLO,
                "name": f"blob-{uuid.uuid4().hex[:8]}",
                "inputs": {"name": {"type": "string"}, "blob": {"type": "string"}},
            }
            workflow_id = await create_workflow(ctx.admin, definition)
            started = await ctx.admin.post(
                f"/api/v1/workflows/{workflow_id}/execute",
                json={"inputs": {"blob": "z" * (300 * 1024)}},
            )
            assert started.status_code == 202, started.text
            execution = await ctx.admin.get(
                f"/api/v1/executions/{started.json()['execution_id']}", params={"view": "summary"}
            )
            _ARTIFACT_REFS[id(ctx)] = execution.json()["inputs"]["blob"]["$ref"]
        ref = _ARTIFACT_REFS[id(ctx)]
        if method == "GET":
            return method, f"/api/v1/artifacts/content?ref={ref}", None
        return method, "/api/v1/artifacts/download-url", {"ref": ref}

    return build


def _on_knowledge_base(
    method: str, suffix: str = "", body: Any = None
) -> Callable[[Context], Awaitable[Request]]:
    """A request on a fresh knowledge base of the default tenant (any member may use it)."""

    async def build(ctx: Context) -> Request:
        created = await ctx.admin.post(
            "/api/v1/knowledge-bases", json={"name": f"kb-{uuid.uuid4().hex[:8]}"}
        )
        assert created.status_code == 201, created.text
        return method, f"/api/v1/knowledge-bases/{created.json()['id']}{suffix}", body

    return build


ENDPOINTS = [
    Endpoint("node types", "member", False, _static("GET", "/api/v1/node-types")),
    Endpoint("validate", "member", False, _static("POST", "/api/v1/workflows/validate", {})),
    Endpoint("list workflows", "member", False, _static("GET", "/api/v1/workflows")),
    Endpoint(
        "create workflow",
        "member",
        False,
        _static("POST", "/api/v1/workflows", {**{"name": "x", "nodes": [], "edges": []}}),
    ),
    Endpoint("read workflow", "read", True, _static("GET", "/api/v1/workflows/{w}")),
    Endpoint(
        "update workflow",
        "update",
        True,
        _static(
            "PUT",
            "/api/v1/workflows/{w}",
            {
                "name": SECRET_WORKFLOW_NAME,
                "nodes": [{"id": "start", "type": "input"}],
                "edges": [],
            },
        ),
    ),
    Endpoint("delete workflow", "delete", True, _delete_workflow),
    Endpoint("execute", "execute", True, _static("POST", "/api/v1/workflows/{w}/execute", {})),
    Endpoint("run", "execute", True, _static("POST", "/api/v1/workflows/{w}/run?wait=10", {})),
    Endpoint("list grants", "read", True, _static("GET", "/api/v1/workflows/{w}/grants")),
    Endpoint(
        "grant",
        "share",
        True,
        _static(
            "PUT",
            "/api/v1/workflows/{w}/grants",
            {"principal": "user:someone", "role": "viewer"},
        ),
    ),
    Endpoint("revoke grant", "share", True, _delete_grant),
    Endpoint("list executions", "member", False, _static("GET", "/api/v1/executions")),
    Endpoint("read execution", "read", True, _static("GET", "/api/v1/executions/{e}")),
    Endpoint(
        "read execution summary",
        "read",
        True,
        _static("GET", "/api/v1/executions/{e}?view=summary"),
    ),
    *(
        Endpoint(
            f"{action} execution",
            "execute",
            True,
            _static("POST", f"/api/v1/executions/{{e}}/{action}"),
        )
        for action in ("cancel", "pause", "resume", "retry")
    ),
    Endpoint(
        "human input",
        "execute",
        True,
        _static("POST", "/api/v1/executions/{e}/input", {"node_id": "greet", "data": {}}),
    ),
    Endpoint("events", "read", True, _static("GET", "/api/v1/executions/{e}/events")),
    Endpoint("logs", "read", True, _static("GET", "/api/v1/executions/{e}/logs")),
    Endpoint(
        "schedules of a workflow", "read", True, _static("GET", "/api/v1/schedules?workflow_id={w}")
    ),
    Endpoint("all schedules", "admin", False, _static("GET", "/api/v1/schedules")),
    Endpoint("create schedule", "update", True, _create_schedule),
    Endpoint(
        "preview schedule",
        "member",
        False,
        _static("GET", "/api/v1/schedules/preview?cron=*/5+*+*+*+*"),
    ),
    Endpoint("read schedule", "read", True, _static("GET", "/api/v1/schedules/{s}")),
    Endpoint("update schedule", "update", True, _update_schedule),
    Endpoint("delete schedule", "update", True, _delete_schedule),
    Endpoint("trigger schedule", "execute", True, _static("POST", "/api/v1/schedules/{s}/trigger")),
    Endpoint("tools", "member", False, _static("GET", "/api/v1/tools")),
    Endpoint("models", "member", False, _static("GET", "/api/v1/ai/models")),
    # A webhook binding belongs to its tenant: another tenant finds nothing bound (404).
    Endpoint("webhook", "admin", True, _static("POST", "/api/v1/triggers/hook", {})),
    # Outbound webhook subscriptions: the tenant admin's; another tenant's is not found.
    Endpoint("list webhooks", "admin", False, _static("GET", "/api/v1/webhooks")),
    Endpoint("create webhook", "admin", False, _static("POST", "/api/v1/webhooks", _WEBHOOK_BODY)),
    Endpoint("read webhook", "admin", True, _on_webhook("GET")),
    Endpoint("replace webhook", "admin", True, _on_webhook("PUT", body=_WEBHOOK_BODY)),
    Endpoint("webhook deliveries", "admin", True, _on_webhook("GET", "/deliveries")),
    Endpoint("delete webhook", "admin", True, _on_webhook("DELETE", fresh=True)),
    Endpoint("list api keys", "admin", False, _static("GET", "/api/v1/api-keys")),
    Endpoint("create api key", "admin", False, _static("POST", "/api/v1/api-keys", {})),
    Endpoint("revoke api key", "admin", True, _revoke_key),
    Endpoint("list secrets", "admin", False, _static("GET", "/api/v1/secrets")),
    Endpoint(
        "put secret",
        "admin",
        False,
        _static("POST", "/api/v1/secrets", {"name": "TOKEN", "value": "abcdefgh"}),
    ),
    Endpoint("delete secret", "admin", True, _delete_secret),
    Endpoint("audit", "admin", False, _static("GET", "/api/v1/audit")),
    Endpoint(
        "invalidate cache", "update", True, _static("DELETE", "/api/v1/cache?workflow_id={w}")
    ),
    Endpoint("versions", "read", True, _static("GET", "/api/v1/workflows/{w}/versions")),
    Endpoint("read version", "read", True, _static("GET", "/api/v1/workflows/{w}/versions/1")),
    Endpoint(
        "diff versions", "read", True, _static("GET", "/api/v1/workflows/{w}/versions/1/diff")
    ),
    Endpoint(
        "rollback", "update", True, _static("POST", "/api/v1/workflows/{w}/versions/1/rollback")
    ),
    Endpoint("list presets", "member", False, _static("GET", "/api/v1/node-presets")),
    Endpoint("create preset", "member", False, _create_preset),
    # Another tenant's preset is not found; any member of the tenant reads it.
    Endpoint("read preset", "member", True, _read_preset),
    # Agents: any member reads, registers and chats; another tenant's agent is not found.
    Endpoint("list agents", "member", False, _static("GET", "/api/v1/agents")),
    Endpoint("register agent", "member", False, _static("POST", "/api/v1/agents", _agent_body())),
    Endpoint("read agent", "member", True, _on_agent("GET")),
    Endpoint("agent versions", "member", True, _on_agent("GET", "/versions")),
    Endpoint("agent version", "member", True, _on_agent("GET", "/versions/1")),
    Endpoint("agent sessions", "member", True, _on_agent("GET", "/sessions")),
    Endpoint("open session", "member", True, _on_agent("POST", "/sessions", {"title": "t"})),
    Endpoint("chat", "member", True, _on_agent("POST", "/chat", {"message": "hello"})),
    Endpoint("upload file", "member", False, _static("POST", "/api/v1/files", {"a": 1})),
    Endpoint("list files", "member", False, _static("GET", "/api/v1/files")),
    Endpoint("read file", "member", True, _on_file("GET")),
    Endpoint("file content", "member", True, _on_file("GET", "/content")),
    Endpoint("delete file", "member", True, _on_file("DELETE")),
    # Artifacts (large values by reference) are the tenant's, as files are.
    Endpoint("artifact content", "member", True, _on_artifact("GET")),
    Endpoint("artifact download url", "member", True, _on_artifact("POST")),
    # Knowledge bases: the tenant's; another tenant's is not found.
    Endpoint("list knowledge bases", "member", False, _static("GET", "/api/v1/knowledge-bases")),
    Endpoint(
        "create knowledge base",
        "member",
        False,
        _static("POST", "/api/v1/knowledge-bases", {"name": f"kb-{uuid.uuid4().hex[:8]}"}),
    ),
    Endpoint("read knowledge base", "member", True, _on_knowledge_base("GET")),
    Endpoint("knowledge documents", "member", True, _on_knowledge_base("GET", "/documents")),
    Endpoint(
        "add knowledge documents",
        "member",
        True,
        _on_knowledge_base("POST", "/documents", {"documents": [{"text": "t", "filename": "a"}]}),
    ),
    Endpoint("retrieve", "member", True, _on_knowledge_base("POST", "/retrieve", {"query": "q"})),
    Endpoint("delete knowledge base", "member", True, _on_knowledge_base("DELETE")),
]

DENIED = {401, 403, 404}


def expected(caller: str, endpoint: Endpoint) -> int | None:
    """The status the caller must get; None: allowed (anything but 401/403/404/5xx)."""
    if caller in ("none", "bad", "expired"):
        return 401
    if caller == "admin":
        return None
    if caller == "other_tenant":
        return 404 if endpoint.targets_object else None
    if endpoint.needs == "member":
        return None
    if endpoint.needs == "admin":
        return 403
    if caller == "member":
        return 404  # no role at all: the workflow's existence is not revealed
    return None if endpoint.needs in ROLE_ACTIONS[caller] else 403  # type: ignore[index]


async def test_every_endpoint_for_every_caller(stack: Stack, client: httpx.AsyncClient) -> None:
    who = await principals(stack)
    workflow_id = await create_workflow(client)
    await grant_roles(client, workflow_id, who.ids)
    hooked = {**HELLO, "name": "hooked", "triggers": [{"type": "webhook", "name": "hook"}]}
    await create_workflow(client, hooked)
    started = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
    assert started.status_code == 202, started.text
    execution_id = started.json()["execution_id"]
    assert (await wait_final(client, execution_id))["status"] == "succeeded"
    ctx = Context(stack, client, who.ids, workflow_id, execution_id, "")
    ctx.schedule_id = await ctx.fresh_schedule()

    failures: list[str] = []
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        for caller in ("none", "bad", "expired", "other_tenant", "member", *ROLE_NAMES, "admin"):
            token = who.tokens[caller]
            headers = bearer(token) if token else {}
            for endpoint in ENDPOINTS:
                method, url, body = await endpoint.build(ctx)
                response = await http.request(method, url, json=body, headers=headers)
                want = expected(caller, endpoint)
                status = response.status_code
                ok = status < 500 and (status == want if want else status not in DENIED)
                if caller == "other_tenant" and SECRET_WORKFLOW_NAME in response.text:
                    ok = False
                if status in (401, 403, 404, 429):
                    ok = ok and response.json()["error"]["code"] in (
                        "unauthenticated",
                        "permission_denied",
                        "not_found",
                        "resource_exhausted",
                    )
                if status == 401:
                    ok = ok and response.headers.get("www-authenticate", "").startswith("Bearer")
                if not ok:
                    failures.append(
                        f"{caller:>12} {endpoint.name:<24} {method} {url} -> {status} "
                        f"(want {want or 'allowed'}): {response.text[:200]}"
                    )
    assert not failures, "\n".join(failures)


async def test_lists_show_only_what_the_caller_may_read(
    stack: Stack, client: httpx.AsyncClient
) -> None:
    who = await principals(stack)
    shared = await create_workflow(client)
    hidden = await create_workflow(client, {**_named("hidden-from-members")})
    await grant_roles(client, shared, who.ids)
    for workflow_id in (shared, hidden):
        response = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
        assert response.status_code == 202
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        for caller, visible in (("viewer", {shared}), ("member", set()), ("other_tenant", set())):
            headers = bearer(who.tokens[caller] or "")
            workflows = (await http.get("/api/v1/workflows", headers=headers)).json()
            assert {w["id"] for w in workflows["items"]} == visible, caller
            assert workflows["total"] == len(visible)
            executions = (await http.get("/api/v1/executions", headers=headers)).json()
            assert {e["workflow_id"] for e in executions["items"]} == visible, caller
            for text in (str(workflows), str(executions)):
                assert "hidden-from-members" not in text
    listed = (await client.get("/api/v1/workflows")).json()
    assert {shared, hidden} <= {w["id"] for w in listed["items"]}


def _named(name: str) -> dict[str, Any]:
    from tests.security.support import HELLO

    return {**HELLO, "name": name}


async def test_scopes_bound_what_a_key_can_do(stack: Stack, client: httpx.AsyncClient) -> None:
    read_only, principal = await new_key(stack, scopes=("read",))
    workflow_id = await create_workflow(client)
    granted = await client.put(
        f"/api/v1/workflows/{workflow_id}/grants", json={"principal": principal, "role": "owner"}
    )
    assert granted.status_code == 200
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=bearer(read_only)) as http:
        assert (await http.get(f"/api/v1/workflows/{workflow_id}")).status_code == 200
        refused = await http.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
        assert refused.status_code == 403
        assert "execute" in refused.json()["error"]["message"]
        assert (await http.delete(f"/api/v1/workflows/{workflow_id}")).status_code == 403


async def test_revoked_key_is_refused_at_once(stack: Stack, client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v1/api-keys", json={"name": "ci", "scopes": ["read"]})
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["key"].startswith(f"hk_{key['prefix']}_")
    listed = (await client.get("/api/v1/api-keys")).json()
    assert key["key"] not in str(listed)  # shown once, never again
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=bearer(key["key"])) as http:
        assert (await http.get("/api/v1/workflows")).status_code == 200
        assert (await client.delete(f"/api/v1/api-keys/{key['id']}")).status_code == 204
        refused = await http.get("/api/v1/workflows")
        assert refused.status_code == 401
        assert refused.json()["error"]["message"] == "API key revoked"


async def test_mutations_are_audited(stack: Stack, client: httpx.AsyncClient) -> None:
    workflow_id = await create_workflow(client)
    started = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
    execution_id = started.json()["execution_id"]
    await wait_final(client, execution_id)
    await client.post(f"/api/v1/executions/{execution_id}/cancel")  # 409: already finished
    run_id = await create_workflow(client)
    assert (await client.post(f"/api/v1/workflows/{run_id}/run", json={})).status_code == 200
    assert (await client.delete(f"/api/v1/workflows/{workflow_id}")).status_code == 204
    records = (await client.get("/api/v1/audit", params={"page_size": 200})).json()["items"]
    seen = {(r["action"], r["object_type"], r["object_id"], r["outcome"]) for r in records}
    assert ("create", "workflow", workflow_id, "success") in seen
    assert ("execute", "workflow", workflow_id, "success") in seen
    assert ("execute", "workflow", run_id, "success") in seen  # the run-and-wait route
    assert ("cancel", "execution", execution_id, "failed") in seen
    assert ("delete", "workflow", workflow_id, "success") in seen
    assert all(r["principal"].startswith("key:") for r in records)
    member, _ = await new_key(stack)
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=bearer(member)) as http:
        assert (await http.get("/api/v1/audit")).status_code == 403
