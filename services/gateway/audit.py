"""The audit trail: one record per authenticated mutating request (who, tenant, what, which
object, when, how it ended), written by a pure ASGI middleware once the route has answered.

Refusals count too: a 403 or 404 on someone else's workflow is recorded as `denied`/`failed`.
Requests without a valid credential (401) are not: they have no principal, and recording
them would let anyone fill the table.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.auth import Principal, Security

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: (method, route template) -> (action, object type). Unlisted mutating routes are recorded
#: as (method, "unknown"); read-only POSTs are listed with None.
ACTIONS: dict[tuple[str, str], tuple[str, str] | None] = {
    ("POST", "/api/v1/workflows/validate"): None,
    ("POST", "/api/v1/workflows"): ("create", "workflow"),
    ("PUT", "/api/v1/workflows/{workflow_id}"): ("update", "workflow"),
    ("DELETE", "/api/v1/workflows/{workflow_id}"): ("delete", "workflow"),
    ("POST", "/api/v1/workflows/{workflow_id}/execute"): ("execute", "workflow"),
    ("POST", "/api/v1/workflows/{workflow_id}/run"): ("execute", "workflow"),
    ("POST", "/api/v1/workflows/{workflow_id}/execute-batch"): ("execute_batch", "workflow"),
    ("POST", "/api/v1/webhooks"): ("create", "webhook"),
    ("PUT", "/api/v1/webhooks/{webhook_id}"): ("update", "webhook"),
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): ("delete", "webhook"),
    ("POST", "/api/v1/events"): ("send", "event"),
    ("PUT", "/api/v1/workflows/{workflow_id}/grants"): ("grant", "workflow"),
    ("DELETE", "/api/v1/workflows/{workflow_id}/grants/{principal}"): ("revoke", "workflow"),
    ("POST", "/api/v1/executions/{execution_id}/cancel"): ("cancel", "execution"),
    ("POST", "/api/v1/executions/{execution_id}/pause"): ("pause", "execution"),
    ("POST", "/api/v1/executions/{execution_id}/resume"): ("resume", "execution"),
    ("POST", "/api/v1/executions/{execution_id}/input"): ("input", "execution"),
    ("POST", "/api/v1/executions/{execution_id}/retry"): ("retry", "execution"),
    ("POST", "/api/v1/schedules"): ("create", "schedule"),
    ("PUT", "/api/v1/schedules/{schedule_id}"): ("update", "schedule"),
    ("DELETE", "/api/v1/schedules/{schedule_id}"): ("delete", "schedule"),
    ("POST", "/api/v1/schedules/{schedule_id}/trigger"): ("execute", "schedule"),
    ("POST", "/api/v1/triggers/{name}"): ("execute", "trigger"),
    ("POST", "/api/v1/api-keys"): ("create", "api_key"),
    ("DELETE", "/api/v1/api-keys/{key_id}"): ("delete", "api_key"),
    ("POST", "/api/v1/secrets"): ("update", "secret"),
    ("DELETE", "/api/v1/secrets/{name}"): ("delete", "secret"),
    ("DELETE", "/api/v1/cache"): ("invalidate", "cache"),
    ("POST", "/api/v1/files"): ("create", "file"),
    ("DELETE", "/api/v1/files/{file_id}"): ("delete", "file"),
    ("POST", "/api/v1/executions/{execution_id}/snapshot"): ("snapshot", "execution"),
    ("POST", "/api/v1/executions/{execution_id}/fork"): ("fork", "execution"),
    ("POST", "/api/v1/node-presets"): ("create", "node_preset"),
    ("PUT", "/api/v1/node-presets/{preset_id}"): ("update", "node_preset"),
    ("DELETE", "/api/v1/node-presets/{preset_id}"): ("delete", "node_preset"),
    ("POST", "/api/v1/agents"): ("create", "agent"),
    ("PUT", "/api/v1/agents/{agent_id}"): ("update", "agent"),
    ("DELETE", "/api/v1/agents/{agent_id}"): ("delete", "agent"),
    ("POST", "/api/v1/agents/{agent_id}/sessions"): ("create", "agent_session"),
    ("DELETE", "/api/v1/agents/{agent_id}/sessions/{session_id}"): ("delete", "agent_session"),
    ("POST", "/api/v1/agents/{agent_id}/chat"): ("execute", "agent"),
    ("POST", "/api/v1/workflows/{workflow_id}/versions/{version}/rollback"): (
        "rollback",
        "workflow",
    ),
}


class AuditMiddleware:
    def __init__(self, app: ASGIApp, security: Security) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") not in MUTATING
            or not self.security.enabled
        ):
            await self.app(scope, receive, send)
            return
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            await self._record(scope, status)

    async def _record(self, scope: Scope, status: int) -> None:
        state = scope.get("state") or {}
        principal = state.get("principal")
        route = scope.get("route")
        template = getattr(route, "path", None)
        if not isinstance(principal, Principal) or template is None:
            return
        method = scope["method"]
        key = (method, template)
        if key in ACTIONS:
            entry = ACTIONS[key]
            if entry is None:
                return
            action, object_type = entry
        else:
            action, object_type = method.lower(), "unknown"
        params = scope.get("path_params") or {}
        object_id = str(state.get("audit_object_id") or "/".join(map(str, params.values())))
        try:
            await self.security.record(
                principal,
                action=action,
                object_type=object_type,
                object_id=object_id,
                status_code=status,
                request_id=str(state.get("request_id", "")),
            )
        except Exception:
            log.exception("could not write an audit record for %s %s", method, template)
