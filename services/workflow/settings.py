"""Settings of the workflow service."""

from __future__ import annotations

import os
import socket

from pydantic import BaseModel, Field

from libs.common.settings import CommonSettings


def _default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class TenantQuota(BaseModel):
    """Limits of one tenant; 0 means unlimited."""

    max_concurrent_executions: int = Field(
        default=0, ge=0, description="Top-level executions pending, running or paused at once."
    )
    max_workflows: int = Field(default=0, ge=0, description="Workflows (not deleted).")
    max_execution_duration_s: float = Field(
        default=0, ge=0, description="An execution still running after this long fails."
    )


class WorkflowSettings(CommonSettings):
    """Options of the workflow service (HEDDLE_ prefix)."""

    replica_id: str = Field(
        default_factory=_default_replica_id,
        description="Identity of this replica in execution leases; unique per process.",
    )
    max_concurrency_per_execution: int = Field(
        default=512, ge=1, description="Nodes of one execution in flight at once."
    )
    max_concurrency_global: int = Field(
        default=4096, ge=1, description="Nodes of all executions in flight at once on a replica."
    )
    park_waiting: bool = Field(
        default=True,
        description="Unload an execution whose nodes only wait (an event, human input, a "
        "delay or retry timer): the replica keeps a wait key and a timer for it, and reloads "
        "it from the database when the event, input or timer comes (services/workflow/"
        "parking.py); off: every waiting execution stays loaded.",
    )
    park_min_s: float = Field(
        default=1.0,
        ge=0,
        description="An execution whose next timer is due sooner than this is not unloaded.",
    )
    tenant_fairness: bool = Field(
        default=True,
        description="While other tenants wait for node slots, a tenant takes at most its equal "
        "share of this replica's max_concurrency_global, so one tenant's fan-out does not "
        "starve another's small runs (bench/fairness.py); off: first come, first served.",
    )
    malloc_trim_interval_s: float = Field(
        default=10.0,
        ge=0,
        description="How often the replica checks whether it went quiet after a burst, and "
        "then gives what glibc's malloc freed back to the OS (malloc_trim, Linux; libs/common/"
        "memtrim.py; pymalloc's arenas are not affected: bench/README, waiters); 0: never.",
    )
    malloc_trim_busy_cpu_s: float = Field(
        default=2.0,
        ge=0,
        description="CPU seconds of work since the last trim that make a quiet replica trim.",
    )
    malloc_trim_quiet_fraction: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="A check interval counts as quiet when the replica used at most this "
        "fraction of a core in it.",
    )
    dispatch_batch_size: int = Field(
        default=128, ge=1, description="Most node attempts sent to a replica in one call."
    )
    dispatch_retries: int = Field(
        default=3, ge=0, description="Extra attempts a node gets when its replica fails the call."
    )
    node_default_timeout_s: float = Field(
        default=3600.0, gt=0, description="Deadline of a node without timeout_s."
    )
    lease_ttl_s: float = Field(
        default=10.0,
        gt=0,
        description="An execution whose owner missed renewing for this long "
        "is taken over by another replica.",
    )
    recovery_interval_s: float = Field(
        default=2.0, gt=0, description="How often a replica looks for executions to take over."
    )
    liveness_check_s: float = Field(
        default=0.5,
        ge=0,
        description="On PostgreSQL, how often a replica checks that its peers' database "
        "sessions are still open: a replica whose process died is detected within about "
        "this long and its executions are taken over at once, not after lease_ttl_s; a "
        "slow or stopped replica keeps its session and is never taken over this way. "
        "0 turns the check off (leases only).",
    )
    max_runner_crashes: int = Field(
        default=3,
        ge=1,
        description="An execution whose runner (or takeover) raised this many times fails "
        "with the last error instead of being taken over again (the poison-execution guard).",
    )
    forward_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long a replica waits for the owner of an "
        "execution to apply a control or input request it forwarded.",
    )
    request_poll_s: float = Field(
        default=0.2, gt=0, description="How often a replica looks for requests forwarded to it."
    )
    worker_port: int | None = Field(
        default=None,
        description="Port of the worker endpoint (WorkerService.Connect, API-key auth, no "
        "service token: the one port workers outside the cluster dial); default "
        "<gRPC port> + 100, 0 = a free port.",
    )
    worker_advertise_address: str = Field(
        default="",
        description="host:port at which other workflow replicas reach this one's gRPC port "
        "to relay attempts to its workers; empty: <bind_host or hostname>:<gRPC port>.",
    )
    auth_enabled: bool = Field(
        default=True,
        description="Workers must present a tenant's API key (the gateway's setting of the "
        "same name); false: every worker serves the default tenant.",
    )
    api_key_pepper: str = Field(
        default="", description="The gateway's api_key_pepper (API keys are verified with it)."
    )
    worker_heartbeat_interval_s: float = Field(
        default=1.0, gt=0, description="How often a worker is asked to send a heartbeat."
    )
    worker_heartbeat_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="A worker silent for this long is dead: its attempts are re-sent to "
        "another worker (a broken connection is noticed at once).",
    )
    worker_schedule_to_start_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="Default of a custom node's schedule_to_start_timeout_s: how long an "
        "attempt waits `queued` for a worker serving its type before it fails.",
    )
    worker_presence_refresh_s: float = Field(
        default=1.0,
        gt=0,
        description="How often a replica publishes which custom types its workers serve "
        "(and how often a queued attempt looks for a worker on another replica).",
    )
    max_definition_nodes: int = Field(default=10_000, ge=1, description="Nodes in a definition.")
    max_definition_edges: int = Field(default=50_000, ge=1, description="Edges in a definition.")
    max_call_depth: int = Field(default=10, ge=1, description="Sub-workflow nesting limit.")
    max_page_size: int = Field(default=200, ge=1, description="Largest page a list call returns.")
    journal_linger_ms: float = Field(
        default=10.0,
        ge=0,
        description="Group commit of agent steps: a batch holding only journal writes no "
        "attempt waits for (a tool's result) waits up to this long for the step's "
        "acknowledged write, to share its commit, while the run's last such write came "
        "within it (a fast model); else it is written at once; 0: always at once.",
    )
    outbox_linger_ms: float = Field(
        default=10.0,
        ge=0,
        description="How long the outbox relay lets committed events gather before it "
        "publishes them: one publish (one socket write, one confirm) for every batch that "
        "committed meanwhile instead of one per batch (a chain's step writes two events); "
        "what the broker's consumers (log service, webhooks) see comes this much later. "
        "0: each batch at once.",
    )
    quota_max_concurrent_executions: int = Field(
        default=100,
        ge=0,
        description="Per tenant: top-level executions pending, running or paused at once "
        "(sub-workflow children are not counted); 0 = unlimited.",
    )
    quota_max_workflows: int = Field(
        default=10_000, ge=0, description="Per tenant: workflows; 0 = unlimited."
    )
    quota_max_execution_duration_s: float = Field(
        default=7 * 24 * 3600.0,
        ge=0,
        description="Per tenant: an execution not finished after this many seconds fails "
        "(paused time included); 0 = unlimited.",
    )
    tenant_quotas: dict[str, TenantQuota] = Field(
        default_factory=dict,
        description='JSON object of per-tenant overrides, e.g. {"acme": '
        '{"max_concurrent_executions": 5}}; unset fields take the quota_* defaults.',
    )

    def quota_for(self, tenant_id: str) -> TenantQuota:
        """The effective quota of a tenant: its override over the quota_* defaults."""
        override = self.tenant_quotas.get(tenant_id)
        base = TenantQuota(
            max_concurrent_executions=self.quota_max_concurrent_executions,
            max_workflows=self.quota_max_workflows,
            max_execution_duration_s=self.quota_max_execution_duration_s,
        )
        if override is None:
            return base
        return base.model_copy(update=override.model_dump(exclude_unset=True))
