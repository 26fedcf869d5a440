"""Settings of the tool service (HEDDLE_ prefix)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from libs.common.settings import CommonSettings, split_csv

MIB = 1024 * 1024


class McpServerConfig(BaseModel):
    """One MCP server: a command to spawn (stdio) or a streamable-HTTP URL."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$", description="Prefix of its tools' names.")
    command: str | None = Field(default=None, description="Executable of a stdio server.")
    args: list[str] = Field(default_factory=list, description="Arguments of the command.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment.")
    cwd: str | None = Field(default=None, description="Working directory of the command.")
    url: str | None = Field(default=None, description="Streamable-HTTP endpoint, e.g. .../mcp.")
    headers: dict[str, str] = Field(default_factory=dict, description="HTTP headers (url only).")
    timeout_s: float = Field(default=30.0, gt=0, description="Connect and per-call timeout.")

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError(f"MCP server {self.name!r} needs exactly one of command or url")
        return self


class ToolSettings(CommonSettings):
    """Options of the tool service."""

    mcp_servers: list[McpServerConfig] = Field(
        default_factory=list,
        description='JSON list: [{"name", "command", "args", "env"} | {"name", "url"}].',
    )
    http_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts, *.suffix wildcards, IPs and CIDRs the http_request "
        "tool may reach although they are private, loopback or link-local.",
    )
    http_max_response_bytes: int = Field(
        default=10 * MIB, gt=0, description="Largest response body http_request reads."
    )
    http_max_redirects: int = Field(
        default=5, ge=0, description="Redirects http_request follows, each one re-checked."
    )
    http_timeout_s: float = Field(default=30.0, gt=0, description="Default http_request timeout.")
    tool_call_timeout_s: float = Field(
        default=60.0, gt=0, description="Upper bound of any tool call."
    )

    knowledge_index_url: str = Field(
        default="",
        description="Vector index of knowledge bases: empty for the embedded one (a SQLite file "
        "at knowledge_index_path, no server), or a Chroma server's http(s):// URL.",
    )
    knowledge_index_path: str = Field(
        default="var/knowledge/vectors.sqlite", description="File of the embedded vector index."
    )
    knowledge_ingest_interval_s: float = Field(
        default=2.0,
        gt=0,
        description="How often pending documents are looked for (a new "
        "document wakes the loop at once on the replica that took it).",
    )
    knowledge_embed_batch: int = Field(
        default=64, ge=1, le=2048, description="Chunks per Embed call while ingesting."
    )

    _split_allow_hosts = field_validator("http_allow_hosts", mode="before")(split_csv)
