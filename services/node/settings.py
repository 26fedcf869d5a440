"""Settings of the node service."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from libs.common.settings import CommonSettings, split_csv
from services.node.executors.base import NodeSettings


class NodeServiceSettings(CommonSettings):
    """Options of a node replica (HEDDLE_ prefix)."""

    http_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts and CIDRs http_request may reach although they are "
        "private, loopback or link-local.",
    )
    code_timeout_s: float = Field(default=10.0, gt=0, description="Wall-clock limit of code.")
    code_memory_mb: int = Field(default=256, gt=16, description="Memory limit of code nodes.")
    max_concurrent_nodes: int = Field(
        default=1024, ge=1, description="Node attempts this replica runs at once."
    )
    child_deadline_s: float = Field(
        default=86_400.0, gt=0, description="Longest a subworkflow/map node waits for a child."
    )

    _split_allow_hosts = field_validator("http_allow_hosts", mode="before")(split_csv)

    def executor_settings(self) -> NodeSettings:
        return NodeSettings(
            http_allow_hosts=self.http_allow_hosts,
            code_timeout_s=self.code_timeout_s,
            code_memory_mb=self.code_memory_mb,
        )
