"""Settings shared by every service, read from `HEDDLE_*` environment variables.

The defaults give the embedded mode (SQLite, in-process bus and cache) so that `make run`
needs no servers. Each service extends `CommonSettings` with its own options.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Loopback gRPC ports of the services (the gateway serves HTTP on http_port).
DEFAULT_PORTS = {
    "workflow": 50051,
    "node": 50052,
    "ai": 50053,
    "tool": 50054,
    "scheduler": 50055,
    "log": 50056,
}


def split_csv(value: object) -> object:
    """Validator: "a, b" from the environment becomes ["a", "b"]; lists pass through."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class CommonSettings(BaseSettings):
    """Options every service understands."""

    model_config = SettingsConfigDict(env_prefix="HEDDLE_", extra="ignore")

    database_url: str = Field(
        default="sqlite+aiosqlite:///./var/heddle.db",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///path or "
        "postgresql+asyncpg://user@host/db.",
    )
    broker_url: str = Field(
        default="memory://",
        description="memory:// for the in-process bus, amqp://user:pass@host:5672/ for RabbitMQ.",
    )
    broker_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_-]{0,64}$",
        description="Deployment name prefixed to every RabbitMQ exchange and queue "
        "(`<prefix>.heddle.events`, `<prefix>.workflow.triggers`), so that several Heddle "
        "deployments can share one vhost; empty: no prefix. Every service of a deployment "
        "must use the same value.",
    )
    redis_url: str = Field(
        default="memory://", description="memory:// for in-process, redis://host:6379/0 for Redis."
    )
    cache_url: str = Field(
        default="",
        description="Store of the shared result-cache tier: redis://... (production: its own "
        "Redis with maxmemory-policy allkeys-lru, so locks and rate limits in HEDDLE_REDIS_URL "
        "are never evicted), memory://, or empty: the store of HEDDLE_REDIS_URL.",
    )
    cache_prefix: str = Field(
        default="heddle-cache:", description="Key prefix of the shared result-cache tier."
    )
    cache_default_ttl_s: float = Field(
        default=86400.0,
        gt=0,
        description="TTL of a cached node result whose node sets no cache.ttl_s: every cache "
        "key expires.",
    )
    cache_memory_entries: int = Field(
        default=10000, ge=0, description="Most entries of the in-process result-cache tier."
    )
    cache_memory_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="Most bytes (of values) of the in-process result-cache tier (LRU out).",
    )
    cache_disk_path: str = Field(
        default="",
        description="Folder of the optional disk result-cache tier (the embedded mode); off "
        "when empty.",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop",
        description="Event loop of the service processes: uvloop (measured here: a gRPC round "
        "trip 25 % cheaper, asyncpg faster) or the standard asyncio loop.",
    )
    log_level: str = Field(default="INFO", description="Root log level.")
    log_format: str = Field(default="json", description="json or console.")
    bind_host: str = Field(default="127.0.0.1", description="Host the gRPC servers bind to.")
    grpc_port: int | None = Field(
        default=None, description="gRPC port of this service; the service default when unset."
    )
    metrics_port: int | None = Field(
        default=None, description="Port of the Prometheus /metrics endpoint; off when unset."
    )
    workflow_address: str = Field(
        default=f"127.0.0.1:{DEFAULT_PORTS['workflow']}", description="gRPC address of workflow."
    )
    node_addresses: Annotated[list[str], NoDecode] = Field(
        default=[f"127.0.0.1:{DEFAULT_PORTS['node']}"],
        description="Comma-separated node replica addresses, or one dns:///name:port resolving "
        "to several.",
    )
    ai_address: str = Field(
        default=f"127.0.0.1:{DEFAULT_PORTS['ai']}", description="gRPC address of ai."
    )
    tool_address: str = Field(
        default=f"127.0.0.1:{DEFAULT_PORTS['tool']}", description="gRPC address of tool."
    )
    scheduler_address: str = Field(
        default=f"127.0.0.1:{DEFAULT_PORTS['scheduler']}", description="gRPC address of scheduler."
    )
    log_address: str = Field(
        default=f"127.0.0.1:{DEFAULT_PORTS['log']}", description="gRPC address of log."
    )
    grpc_deadline_s: float = Field(
        default=30.0, gt=0, description="Default deadline of an outgoing gRPC call."
    )
    service_token: str = Field(
        default="", description="Shared credential services present to each other; off if empty."
    )
    tls_cert: str = Field(
        default="",
        description="PEM file of this process's gRPC certificate; with tls_key and tls_ca it "
        "turns on mutual TLS between services (servers then require client certificates).",
    )
    tls_key: str = Field(default="", description="PEM file of the private key of tls_cert.")
    tls_ca: str = Field(
        default="", description="PEM file of the CA that signs every service's certificate."
    )
    tls_server_name: str = Field(
        default="",
        description="Name the server certificates are checked against (overrides the host of "
        "the address); empty: the host.",
    )
    secrets_key: str = Field(
        default="",
        description="Base64 of the 32-byte AES-256-GCM key that encrypts tenant secrets at rest "
        "(the workflow service); empty: secrets are unavailable.",
    )

    artifact_url: str = Field(
        default="file://./var/artifacts",
        description="Artifact store (files, large values by reference, snapshots): "
        "file://./path (a local folder, the embedded mode) or s3://bucket/prefix (any "
        "S3-compatible store: MinIO, AWS S3; endpoint and credentials below).",
    )
    artifact_s3_endpoint: str = Field(
        default="", description="S3 endpoint URL (http://minio:9000); empty: AWS's."
    )
    artifact_s3_region: str = Field(default="us-east-1", description="S3 region.")
    artifact_s3_access_key: SecretStr = Field(
        default=SecretStr(""), description="S3 access key id (a secret)."
    )
    artifact_s3_secret_key: SecretStr = Field(
        default=SecretStr(""), description="S3 secret access key (a secret)."
    )
    artifact_s3_create_bucket: bool = Field(
        default=True, description="Create the bucket at first use when it is missing."
    )
    claim_check_bytes: int = Field(
        default=256 * 1024,
        gt=0,
        description="A node output or execution input whose JSON is larger than this is "
        "stored in the artifact store and carried by reference (the claim check).",
    )

    _split_node_addresses = field_validator("node_addresses", mode="before")(split_csv)

    def port_for(self, service: str) -> int:
        """The gRPC port this service listens on."""
        return self.grpc_port if self.grpc_port is not None else DEFAULT_PORTS[service]
