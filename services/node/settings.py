"""Settings of the node service."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

from libs.common.settings import CommonSettings, split_csv
from services.node.executors.base import NodeSettings


class AgentTenantQuota(BaseModel):
    """The node service's part of a tenant's quota (HEDDLE_TENANT_QUOTAS, which the workflow
    service reads too: its fields are ignored here, this one there)."""

    max_agent_tokens_per_day: int | None = Field(
        default=None, ge=0, description="Model tokens its agent runs may use per UTC day."
    )


class NodeServiceSettings(CommonSettings):
    """Options of a node replica (HEDDLE_ prefix)."""

    http_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts and CIDRs http_request may reach although they are "
        "private, loopback or link-local.",
    )
    code_timeout_s: float = Field(default=10.0, gt=0, description="Wall-clock limit of code.")
    code_memory_mb: int = Field(default=256, gt=16, description="Memory limit of code nodes.")
    code_sandbox: Literal["bubblewrap", "unsafe-process"] = Field(
        default="bubblewrap",
        description="Isolation of code nodes. 'bubblewrap': each run in its own "
        "jail (pid, ipc, uts, net, mount and cgroup namespaces, uid 65534, no environment, "
        "a read-only filesystem of the Python stdlib only, a small scratch tmpfs); code "
        "nodes are refused when bubblewrap is missing or fails its self-check. "
        "'unsafe-process': opt in to a plain resource-limited subprocess where bubblewrap "
        "cannot run; it is not a security boundary against hostile code.",
    )
    code_bwrap_path: str = Field(
        default="/usr/bin/bwrap", description="Path of the bubblewrap binary (Debian: bubblewrap)."
    )
    code_allow_network: bool = Field(
        default=False,
        description="Share the host's network with code nodes (default: a private network "
        "namespace with only its own loopback).",
    )
    code_scratch_mb: int = Field(
        default=16, gt=0, description="Size of the writable scratch tmpfs (/tmp) of code nodes."
    )
    max_concurrent_nodes: int = Field(
        default=1024, ge=1, description="Node attempts this replica runs at once."
    )
    child_deadline_s: float = Field(
        default=86_400.0, gt=0, description="Longest a subworkflow/map node waits for a child."
    )

    sql_max_rows: int = Field(default=10_000, gt=0, description="Largest max_rows of sql.")
    loop_max_iterations: int = Field(
        default=1000, gt=0, description="Largest max_iterations of a loop node."
    )
    sql_max_engines: int = Field(
        default=16, gt=0, description="Database connection pools kept for sql nodes."
    )
    sql_pool_size: int = Field(
        default=4, gt=0, description="Connections of each sql connection pool."
    )
    delay_timer_min_s: float = Field(
        default=60.0,
        ge=0,
        description="Delays of at least this many seconds are workflow-service timers.",
    )
    agent_max_delegation_depth: int = Field(
        default=4,
        gt=0,
        description="Agent-to-agent delegations in a chain (A -> B is 1) before the run stops "
        "with delegation_depth_exceeded.",
    )
    agent_journal: bool = Field(
        default=True,
        description="Journal every agent step durably (acknowledged checkpoints) so a run "
        "resumes after a crash; off: nothing is stored or waited for (a lost attempt starts "
        "the run again), the steps are still published as agent.step events "
        "(bench/agent_steps.py's baseline).",
    )

    quota_max_agent_tokens_per_day: int = Field(
        default=0,
        ge=0,
        description="Per tenant: model tokens agent runs may use per UTC day, counted in "
        "HEDDLE_REDIS_URL (over it, a run stops with budget_exceeded before its next model "
        "call); 0 = unlimited.",
    )
    tenant_quotas: dict[str, AgentTenantQuota] = Field(
        default_factory=dict,
        description='Per-tenant overrides, e.g. {"acme": {"max_agent_tokens_per_day": 100000}} '
        "(the same variable as the workflow service's quotas).",
    )

    _split_allow_hosts = field_validator("http_allow_hosts", mode="before")(split_csv)

    def executor_settings(self) -> NodeSettings:
        return NodeSettings(
            http_allow_hosts=self.http_allow_hosts,
            code_timeout_s=self.code_timeout_s,
            code_memory_mb=self.code_memory_mb,
            code_sandbox=self.code_sandbox,
            code_bwrap_path=self.code_bwrap_path,
            code_allow_network=self.code_allow_network,
            code_scratch_mb=self.code_scratch_mb,
            sql_max_rows=self.sql_max_rows,
            claim_check_bytes=self.claim_check_bytes,
            loop_max_iterations=self.loop_max_iterations,
            sql_max_engines=self.sql_max_engines,
            sql_pool_size=self.sql_pool_size,
            delay_timer_min_s=self.delay_timer_min_s,
            agent_journal=self.agent_journal,
            agent_tenant_daily_tokens=self.quota_max_agent_tokens_per_day,
            agent_tenant_daily_tokens_by_tenant={
                tenant: quota.max_agent_tokens_per_day
                for tenant, quota in self.tenant_quotas.items()
                if quota.max_agent_tokens_per_day is not None
            },
            agent_max_delegation_depth=self.agent_max_delegation_depth,
        )
