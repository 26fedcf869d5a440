"""Settings of the HTTP gateway, read from `HEDDLE_*` environment variables."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from libs.common.settings import CommonSettings, split_csv

Dependency = Literal["workflow", "node", "ai", "tool", "scheduler", "log", "database", "redis"]
#: The services behind the gateway (readiness: their gRPC health checks).
DEPENDENCIES: tuple[Dependency, ...] = ("workflow", "node", "ai", "tool", "scheduler", "log")
#: The gateway's own stores: API keys, grants and audit (database), rate limits (redis; only
#: reported when HEDDLE_REDIS_URL is a Redis server).
STORES: tuple[Dependency, ...] = ("database", "redis")


class GatewaySettings(CommonSettings):
    """Options of the gateway (on top of the shared ones: service addresses, deadlines...)."""

    http_host: str = Field(default="127.0.0.1", description="Host the HTTP server binds to.")
    http_port: int = Field(
        default=8080, ge=0, le=65535, description="HTTP port; 0 picks a free one."
    )
    max_body_bytes: int = Field(
        default=2 * 1024 * 1024, gt=0, description="Largest request body accepted (413 above)."
    )
    default_page_size: int = Field(
        default=50, gt=0, description="page_size of list routes when the client gives none."
    )
    max_page_size: int = Field(
        default=200, gt=0, description="Largest page_size a list route accepts (422 above)."
    )
    sse_heartbeat_s: float = Field(
        default=15.0, gt=0, description="Seconds between `: ping` comments on an idle SSE stream."
    )
    event_stream_max_s: float = Field(
        default=3600.0,
        gt=0,
        description="Deadline of one event-stream gRPC call; a client resumes with "
        "Last-Event-ID (SSE) or ?after= (WebSocket) when it ends.",
    )
    readiness_timeout_s: float = Field(
        default=1.0, gt=0, description="Deadline of each dependency's gRPC health check."
    )
    ready_required: Annotated[list[Dependency], NoDecode] = Field(
        default=[*DEPENDENCIES, *STORES],
        description="Comma-separated dependencies whose outage makes /readyz answer 503 "
        "(the others are reported only): workflow, node, ai, tool, scheduler, log, database, "
        "redis. Default: all, so that 200 means the stack is up. A deployment that runs "
        "rate limits fail-open may drop redis here so that a Redis outage does not take every "
        "gateway replica out of its load balancer.",
    )
    dependency_retry_after_s: int = Field(
        default=2,
        ge=1,
        description="Retry-After (seconds) of every 503 answered while a dependency (the "
        "database, Redis, a service behind the gateway) is unavailable.",
    )
    jaeger_ui_url: str = Field(
        default="",
        description="Base URL of the Jaeger UI (e.g. http://localhost:16686); the console links "
        "each execution's trace there. Empty: no link.",
    )
    shutdown_grace_s: int = Field(
        default=5, ge=0, description="Seconds open connections get to finish on shutdown."
    )
    http_keepalive_s: int = Field(
        default=75,
        ge=1,
        description="Seconds an idle keep-alive connection stays open. Longer than the clients' "
        "and load balancers' own idle timeouts (httpx 5 s, nginx and cloud load balancers 60 s): "
        "a server that closes first races the client's next request on that connection, which "
        "then fails with a connection reset.",
    )

    auth_enabled: bool = Field(
        default=True,
        description="Require an API key or a JWT on every /api/v1 route, the SSE stream and the "
        "WebSocket. false only for local experiments: every caller is then the admin of the "
        "default tenant.",
    )
    api_key_pepper: str = Field(
        default="",
        description="Server-side secret mixed into the HMAC-SHA-256 of API keys (set it in "
        "production: a leaked database alone then cannot even test guesses). Changing it "
        "invalidates every key.",
    )
    api_key_max_ttl_days: int = Field(
        default=0, ge=0, description="Longest lifetime of a new API key; 0 = keys may not expire."
    )
    bootstrap_api_key: str = Field(
        default="",
        description="An API key (hk_<prefix>_<secret>) that the gateway installs at start as an "
        "admin of the default tenant if it is missing: how a fresh deployment gets its first "
        "key (from a Kubernetes Secret, say).",
    )
    jwt_issuer: str = Field(default="", description="Required `iss` of JWT bearer tokens.")
    jwt_audience: str = Field(default="", description="Required `aud` of JWT bearer tokens.")
    jwt_hs256_secret: str = Field(
        default="",
        description="Shared secret of HS256 tokens; JWTs are refused when neither "
        "this nor jwt_public_key is set.",
    )
    jwt_public_key: str = Field(
        default="", description="PEM public key (or a path to one) of RS256 tokens."
    )
    jwt_tenant_claim: str = Field(default="tenant", description="Claim naming the tenant.")
    jwt_roles_claim: str = Field(
        default="roles", description="Claim listing roles; `admin` makes a tenant admin."
    )
    jwt_leeway_s: float = Field(default=30.0, ge=0, description="Clock skew allowed on exp/nbf.")
    rate_limit_per_s: float = Field(
        default=50.0, gt=0, description="Sustained requests per second per API key / JWT subject."
    )
    rate_limit_burst: int = Field(
        default=100, ge=1, description="Requests a key may send at once above the sustained rate."
    )
    rate_limit_lease: int = Field(
        default=16,
        ge=1,
        description="Rate-limit tokens a gateway replica takes from the shared bucket (Redis) "
        "per round trip and spends itself (at most a tenth of rate_limit_burst; 1: one round "
        "trip per request, the exact bucket). Over any interval a principal may exceed its "
        "bucket by at most this many requests minus one per replica; tokens not spent within "
        "1 s are forfeited. Fail-closed rate limits (rate_limit_failure_mode) ask every time.",
    )
    rate_limit_failure_mode: Literal["open", "closed"] = Field(
        default="open",
        description="What requests get while the rate-limit store (Redis) is unreachable: "
        "`open` serves them without rate limiting (a warning is logged and "
        "heddle_gateway_rate_limit_unchecked_total counts them), `closed` answers 503 with "
        "Retry-After. Authentication is checked either way.",
    )
    rate_limit_timeout_s: float = Field(
        default=0.5,
        gt=0,
        description="Deadline of one rate-limit check; a store slower than this counts as "
        "unreachable (see rate_limit_failure_mode).",
    )
    api_key_cache_ttl_s: float = Field(
        default=30.0,
        ge=0,
        description="Seconds a verified API key is remembered, so that requests need no "
        "database read to authenticate (and keep working through a short database outage). "
        "A key revoked through this gateway is forgotten at once; one revoked through another "
        "gateway replica is refused here within this many seconds. 0: no cache.",
    )
    api_key_cache_size: int = Field(
        default=10_000,
        ge=1,
        description="Most API keys the cache remembers (least recently used first out).",
    )

    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Comma-separated origins (scheme://host[:port]) whose browser scripts may "
        "call the API (CORS); `*` allows any origin. Empty (the default): no CORS headers, "
        "and a preflight is refused, since the console is served from the gateway's own origin.",
    )
    cors_allow_credentials: bool = Field(
        default=False,
        description="Let allowed origins send cookies or HTTP authentication "
        "(Access-Control-Allow-Credentials); the allowed origin is then echoed, never `*`.",
    )
    cors_max_age_s: int = Field(
        default=600, ge=0, description="Seconds a browser may cache a preflight's answer."
    )

    http_allow_hosts: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Comma-separated hosts and CIDRs a webhook URL may point at although they "
        "are private, loopback or link-local (the http_request node's policy and variable).",
    )

    event_keep_s: float = Field(
        default=3600.0,
        gt=0,
        description="How long an event POSTed to /api/v1/events that no wait_event node waits "
        "for yet is kept for one that starts waiting later (and the most a request may ask).",
    )

    files_max_bytes: int = Field(
        default=1024 * 1024 * 1024,
        gt=0,
        description="Largest file POST /api/v1/files accepts (413 above, nothing stored); "
        "files_tenant_max_bytes overrides it per tenant.",
    )
    files_tenant_max_bytes: Annotated[dict[str, int], NoDecode] = Field(
        default={},
        description="Per-tenant largest upload: comma-separated tenant=bytes pairs.",
    )
    files_quota_bytes: int = Field(
        default=0,
        ge=0,
        description="Most bytes of files one tenant may keep (429 above); 0: no quota.",
    )
    files_retention_s: float = Field(
        default=0,
        ge=0,
        description="Seconds an uploaded file is kept, then removed by the retention loop; "
        "0: kept until deleted.",
    )
    files_retention_interval_s: float = Field(
        default=300.0, gt=0, description="Seconds between two runs of the file retention loop."
    )
    download_url_ttl_s: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="Seconds a signed artifact download URL (POST /api/v1/artifacts/"
        "download-url) stays valid.",
    )

    _split_ready_required = field_validator("ready_required", mode="before")(split_csv)
    _split_allow_hosts = field_validator("http_allow_hosts", mode="before")(split_csv)
    _split_cors_origins = field_validator("cors_allow_origins", mode="before")(split_csv)

    @field_validator("files_tenant_max_bytes", mode="before")
    @classmethod
    def _parse_tenant_limits(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = [part.strip() for part in value.split(",") if part.strip()]
            return {k.strip(): int(v) for k, v in (pair.split("=", 1) for pair in pairs)}
        return value

    def file_limit(self, tenant_id: str) -> int:
        """The largest upload of this tenant."""
        return self.files_tenant_max_bytes.get(tenant_id, self.files_max_bytes)
