"""Workflow definitions: validation, creation, versioning, listing, deletion."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.common.db import utcnow
from libs.common.definition import WorkflowDefinition
from libs.common.errors import InvalidArgument, NotFound, ResourceExhausted
from services.workflow import repository as repo
from services.workflow.agent_dispatch import with_agent_references
from services.workflow.catalog import NodeCatalog
from services.workflow.models import WorkflowRow, WorkflowVersionRow
from services.workflow.planner import DefinitionGraph
from services.workflow.settings import WorkflowSettings
from services.workflow.validation import ValidationReport, validate_definition

#: Told of each saved version: (workflow id, version, its validated definition and graph).
SavedHook = Callable[[str, int, WorkflowDefinition, DefinitionGraph | None], None]


def report_details(report: ValidationReport) -> list[dict[str, Any]]:
    return [issue.model_dump() for issue in report.errors]


def _webhooks(definition: dict[str, Any]) -> list[str]:
    return sorted({t["name"] for t in definition.get("triggers", []) if t.get("type") == "webhook"})


class WorkflowStore:
    """Definitions and their versions; every write validates first."""

    def __init__(
        self,
        settings: WorkflowSettings,
        sessions: async_sessionmaker[AsyncSession],
        catalog: NodeCatalog,
        on_saved: SavedHook | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.catalog = catalog
        #: The engine's Engine.remember_saved: the first run of a version this replica saved
        #: takes the parsed definition and its graph instead of parsing the stored JSON again.
        self.on_saved = on_saved

    async def validate(self, raw: Any, tenant_id: str = "") -> ValidationReport:
        """Validate against the built-in node types and the tenant's custom ones."""
        node_types = await self.catalog.for_tenant(tenant_id)
        tool_catalog = self.catalog.tools
        tools = await tool_catalog.get() if tool_catalog is not None else None
        report = validate_definition(
            raw,
            node_types,
            max_nodes=self.settings.max_definition_nodes,
            max_edges=self.settings.max_definition_edges,
            tools=tools,
            tools_unavailable=tool_catalog.error if tool_catalog is not None else None,
        )
        return await with_agent_references(report, raw, self.sessions, tenant_id)

    async def _checked(self, raw: Any, tenant_id: str) -> tuple[dict[str, Any], ValidationReport]:
        report = await self.validate(raw, tenant_id)
        if not report.valid or report.definition is None:
            count = sum(1 for issue in report.errors if issue.severity == "error")
            raise InvalidArgument(
                f"the workflow definition has {count} problem(s)", details=report_details(report)
            )
        return report.definition.model_dump(mode="json", exclude_none=True), report

    def _saved(self, version: WorkflowVersionRow, report: ValidationReport) -> None:
        if self.on_saved is not None and report.definition is not None:
            self.on_saved(version.workflow_id, version.version, report.definition, report.graph)

    async def create(
        self, tenant_id: str, raw: Any, hidden: bool = False
    ) -> tuple[WorkflowRow, WorkflowVersionRow]:
        """Validate and save a new workflow; a hidden one (made by the platform for itself)
        is left out of the listings and of the tenant's workflow quota."""
        definition, report = await self._checked(raw, tenant_id)
        now = utcnow()
        workflow = WorkflowRow(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            name=definition["name"],
            description=definition.get("description", ""),
            latest_version=1,
            created_at=now,
            updated_at=now,
            hidden=hidden,
        )
        version = WorkflowVersionRow(
            workflow_id=workflow.id, version=1, definition=definition, created_at=now
        )
        limit = self.settings.quota_for(tenant_id).max_workflows
        async with self.sessions() as session, session.begin():
            if not hidden and limit and await repo.count_workflows(session, tenant_id) >= limit:
                raise ResourceExhausted(
                    f"tenant quota: at most {limit} workflows",
                    {"quota": "max_workflows", "limit": limit},
                )
            session.add(workflow)
            await session.flush()
            session.add(version)
            await repo.bind_webhooks(session, tenant_id, workflow.id, _webhooks(definition))
        self._saved(version, report)
        return workflow, version

    async def update(
        self, tenant_id: str, workflow_id: str, raw: Any
    ) -> tuple[WorkflowRow, WorkflowVersionRow]:
        """Save raw as the next version; executions keep running the version they started."""
        definition, report = await self._checked(raw, tenant_id)
        now = utcnow()
        async with self.sessions() as session, session.begin():
            workflow = await repo.get_workflow(session, tenant_id, workflow_id)
            if workflow is None:
                raise NotFound(f"workflow {workflow_id!r} not found")
            workflow.latest_version += 1
            workflow.name = definition["name"]
            workflow.description = definition.get("description", "")
            workflow.updated_at = now
            version = WorkflowVersionRow(
                workflow_id=workflow.id,
                version=workflow.latest_version,
                definition=definition,
                created_at=now,
            )
            session.add(version)
            await repo.bind_webhooks(session, tenant_id, workflow.id, _webhooks(definition))
        self._saved(version, report)
        return workflow, version

    async def get(
        self, tenant_id: str, workflow_id: str, version: int = 0
    ) -> tuple[WorkflowRow, WorkflowVersionRow]:
        async with self.sessions() as session:
            workflow = await repo.get_workflow(session, tenant_id, workflow_id)
            if workflow is None:
                raise NotFound(f"workflow {workflow_id!r} not found")
            row = await repo.get_version(session, workflow_id, version or workflow.latest_version)
            if row is None:
                raise NotFound(f"workflow {workflow_id!r} has no version {version}")
        return workflow, row

    async def list(
        self, tenant_id: str, page: int, page_size: int, only_ids: Sequence[str] | None = None
    ) -> tuple[Sequence[WorkflowRow], int]:
        async with self.sessions() as session:
            return await repo.list_workflows(
                session, tenant_id, (page - 1) * page_size, page_size, only_ids
            )

    async def delete(self, tenant_id: str, workflow_id: str) -> None:
        """Soft delete: executions keep their history; the workflow disappears from the API."""
        async with self.sessions() as session, session.begin():
            workflow = await repo.get_workflow(session, tenant_id, workflow_id)
            if workflow is None:
                raise NotFound(f"workflow {workflow_id!r} not found")
            workflow.deleted_at = utcnow()
            await repo.bind_webhooks(session, tenant_id, workflow.id, [])
