"""Who may do what: the one table of roles and actions (services/gateway/README.md shows it).

Per workflow a principal holds at most one role. A tenant `admin` may do every action on
every workflow of its tenant, and the tenant-wide actions nobody else may do. Whatever the
role, a credential's scopes bound it: a key with only `read` reads, even an admin's.
"""

from __future__ import annotations

from typing import Literal

Role = Literal["owner", "editor", "executor", "viewer"]
WorkflowAction = Literal["read", "execute", "update", "delete", "share"]
Scope = Literal["read", "write", "execute", "admin"]

ROLES: tuple[Role, ...] = ("owner", "editor", "executor", "viewer")
SCOPES: tuple[Scope, ...] = ("read", "write", "execute", "admin")

#: Role -> the workflow actions it allows.
#: read: the workflow, its executions, their events and logs, its schedules;
#: execute: start, cancel/pause/resume, answer human input, retry;
#: update: new versions, schedules; delete: the workflow; share: grant and revoke roles.
ROLE_ACTIONS: dict[Role, frozenset[WorkflowAction]] = {
    "viewer": frozenset({"read"}),
    "executor": frozenset({"read", "execute"}),
    "editor": frozenset({"read", "execute", "update"}),
    "owner": frozenset({"read", "execute", "update", "delete", "share"}),
}

#: Tenant-wide actions. Members (any authenticated principal of the tenant) may create and
#: validate workflows and read the catalog; the rest is for tenant admins only.
TENANT_ACTIONS: dict[str, Literal["member", "admin"]] = {
    "create_workflow": "member",
    "validate_workflow": "member",
    "read_catalog": "member",
    "run_agent": "member",  # chat with an agent, open and delete one's own sessions
    "list_all": "admin",  # every workflow/execution/schedule of the tenant, without grants
    "manage_api_keys": "admin",
    "manage_secrets": "admin",
    "manage_webhooks": "admin",
    "read_audit": "admin",
    "fire_trigger": "admin",
    "send_event": "admin",
    # Files (uploads) are the tenant's: any member uploads, reads and deletes them.
    "upload_file": "member",
    "read_file": "member",
    "delete_file": "member",
    # Knowledge bases are the tenant's: any member reads, retrieves and adds documents.
    "read_knowledge": "member",
    "write_knowledge": "member",
}

#: The scope an action needs.
ACTION_SCOPES: dict[str, Scope] = {
    "read": "read",
    "execute": "execute",
    "update": "write",
    "delete": "write",
    "share": "write",
    "create_workflow": "write",
    "validate_workflow": "read",
    "read_catalog": "read",
    "run_agent": "execute",
    "list_all": "read",
    "manage_api_keys": "admin",
    "manage_secrets": "admin",
    "manage_webhooks": "admin",
    "read_audit": "admin",
    "fire_trigger": "execute",
    "send_event": "execute",
    "upload_file": "write",
    "read_file": "read",
    "delete_file": "write",
    "read_knowledge": "read",
    "write_knowledge": "write",
}


def role_allows(role: str | None, action: WorkflowAction) -> bool:
    allowed = ROLE_ACTIONS.get(role) if role in ROLES else None
    return allowed is not None and action in allowed
