"""Every setting of the server, read from the environment (PROTOCOL.md §1).

One `Settings` object is built at start-up and passed down; nothing else reads
`os.environ` for ENF_* names.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

RecordingMode = Literal["required", "optional", "off"]

# The shortest JWT secret the server starts with (HS256 wants a key as long as
# its hash, RFC 7518 §3.2), unless ENF_ALLOW_WEAK_SECRET says it is a trial.
MIN_JWT_SECRET_BYTES = 32
# The longest token lifetime (`exp` - `iat`) accepted unless configured.
DEFAULT_MAX_TOKEN_TTL_S = 24 * 3600


@functools.lru_cache(maxsize=8)
def _parse_ice(text: str) -> list[Any]:
    """Parsed once per value (it is handed out on every join during a call)."""
    servers: list[Any] = json.loads(text)
    return servers


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENF_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path("./.enf-data")
    jwt_secret: str | None = None
    # Development only: start with an ENF_JWT_SECRET under 32 bytes.
    allow_weak_secret: bool = False
    # Tokens whose lifetime (exp - iat) exceeds this are refused (PROTOCOL §8).
    max_token_ttl_s: float = Field(DEFAULT_MAX_TOKEN_TTL_S, gt=0)
    offer_timeout_s: float = Field(30.0, gt=0)
    request_ttl_s: float = Field(900.0, gt=0)
    reconnect_grace_s: float = Field(20.0, ge=0)
    # PROTOCOL §5: the unhappy half of the act. A call not started this long
    # after the assignment is cancelled (join_window); a pause this long fails
    # the act (party_lost); with ENF_RECORDING=required, no recording.ready this
    # long after video.end fails it too (recording_failed).
    join_window_s: float = Field(900.0, gt=0)
    pause_timeout_s: float = Field(600.0, gt=0)
    recording_ready_timeout_s: float = Field(600.0, gt=0)
    video_provider: Literal["webrtc", "twilio"] = "webrtc"
    # The server's public base URL (for Twilio's status callbacks and their
    # signature check); unset: http://ENF_HOST:ENF_PORT.
    public_url: str | None = None
    # Another base URL for Twilio's REST API (a regional proxy, a stand-in).
    twilio_api_base: str | None = None
    recordings_url: str | None = None
    s3_endpoint_url: str | None = None
    cluster: Literal["local", "ray"] = "local"
    # Cluster mode (ENF_CLUSTER=ray): the Ray cluster to join (unset: RAY_ADDRESS,
    # else "auto"; a private cluster is never started), the Ray namespace of
    # the shard actors, whether calls to a shard are batched per loop tick,
    # the presence lease a gateway renews per connected notary, and each
    # shard process's Postgres pool.
    ray_address: str | None = None
    ray_namespace: str = "enf"
    ray_batch: bool = True
    presence_lease_s: float = Field(15.0, gt=0)
    shard_pool_size: int = Field(4, ge=2, le=100)
    # Requests per second of one user over all its connections in the cluster.
    user_rate_limit: float = Field(200.0, gt=0)
    # Recorder actors in the cluster (each a Ray actor with num_cpus=1).
    recorders: int = Field(1, ge=1, le=1000)
    signing_key_file: Path | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    recording: RecordingMode = "required"
    shards: int = Field(8, ge=1, le=4096)
    allowed_countries: str = "PH"
    pii_key_file: Path | None = None
    ice_servers: str = "[]"
    delivery_max_attempts: int = Field(12, ge=1)
    # Retry backoff of deliveries (full jitter): base and cap, seconds.
    delivery_base_s: float = Field(1.0, gt=0)
    delivery_cap_s: float = Field(300.0, gt=0)
    delivery_timeout_s: float = Field(10.0, gt=0)
    # How often a distributing session re-reads the outbox for outcomes it missed.
    delivery_resync_s: float = Field(30.0, gt=0)
    # Circuit breaker per destination: failures in a row that open it, and
    # the first pause before a probe (doubling up to 5 minutes).
    breaker_threshold: int = Field(5, ge=1)
    breaker_cooldown_s: float = Field(5.0, gt=0)
    # Write events for the outside world to the outbox (off only to measure it).
    outbox: bool = True
    # How long the envelope link in a distribution SMS stays valid.
    share_link_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    # Per-connection request rate (PROTOCOL §8 Limits): sustained rate, burst = 2x.
    rate_limit: float = Field(50.0, gt=0)
    # Other limits (PROTOCOL §8 Limits; README "Limits"). Open WebSockets per
    # user (per gateway in cluster mode), one more is refused with HTTP 429.
    max_connections_per_user: int = Field(20, ge=1)
    # Sessions in REQUESTED per customer; one more `session.request` is
    # `rate_limited` (a repeat of an existing one is answered as a repeat).
    max_open_requests: int = Field(5, ge=1)
    # Authenticated HTTP calls per second per user (bursts of twice that).
    http_user_rate_limit: float = Field(50.0, gt=0)
    # Per IP address: unauthenticated HTTP requests and failed
    # authentications (HTTP or WebSocket) per minute (bursts of that many).
    anon_rate_limit: float = Field(120.0, gt=0)
    # Seconds a client has to send a request's head (request line and
    # headers) on a new or idle HTTP connection before it is dropped.
    header_timeout_s: float = Field(10.0, gt=0)
    # Audit rows of refused WebSocket frames per connection: the first
    # `audit_refusals_burst` per interval, then one summary row with a count.
    audit_refusals_burst: int = Field(20, ge=0)
    audit_refusals_interval_s: float = Field(60.0, gt=0)
    # Share of the amount kept by the platform (the rest is the ENP's fee).
    platform_fee_share: float = Field(0.20, ge=0, le=1)
    heartbeat_s: float = Field(20.0, gt=0)
    # Actor runtime tuning.
    mailbox_size: int = Field(1024, ge=8)
    passivate_after_s: float = Field(300.0, gt=0)
    snapshot_every: int = Field(50, ge=1)
    outbound_queue: int = Field(1024, ge=16)
    # Years the record of an act is kept (the envelope's compliance block).
    retention_years: int = Field(10, ge=1, le=100)
    # Postgres: pool size, journal writer tasks (each holds one connection) and
    # the most appends one group commit takes (1 = one transaction per append).
    db_pool_size: int = Field(10, ge=2, le=1000)
    journal_writers: int = Field(2, ge=1, le=64)
    journal_max_batch: int = Field(500, ge=1)

    @model_validator(mode="after")
    def _pool_room(self) -> Settings:
        if self.journal_writers >= self.db_pool_size:
            raise ValueError(
                "ENF_JOURNAL_WRITERS must be below ENF_DB_POOL_SIZE (writers hold a"
                " connection each; reads need the rest)"
            )
        return self

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        """Made absolute once, here, so that nothing resolves it on the event
        loop later (file URLs, the shard actors' settings)."""
        return v.expanduser().absolute()

    @field_validator("allowed_countries")
    @classmethod
    def _countries(cls, v: str) -> str:
        return ",".join(c.strip().upper() for c in v.split(",") if c.strip())

    @field_validator("ice_servers")
    @classmethod
    def _ice(cls, v: str) -> str:
        parsed = json.loads(v)
        if not isinstance(parsed, list):
            raise ValueError("ENF_ICE_SERVERS must be a JSON list")
        return v

    @property
    def allowed_country_set(self) -> frozenset[str]:
        return frozenset(self.allowed_countries.split(","))

    @property
    def ice_server_list(self) -> Sequence[Mapping[str, Any]]:
        """Shared by every join during a call: read, never changed."""
        return _parse_ice(self.ice_servers)

    @property
    def recordings_location(self) -> str:
        return self.recordings_url or f"file://{self.data_dir / 'recordings'}"

    def resolve_jwt_secret(self) -> tuple[str, bool]:
        """The HS256 key and whether it was generated here.

        With no ENF_JWT_SECRET a random key is generated once and kept under
        ENF_DATA_DIR, so `run.py token` and a restarted server agree on it.
        """
        if self.jwt_secret:
            return self.jwt_secret, False
        path = self.data_dir / "jwt.secret"
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        try:
            # Created readable by its owner only, from its first moment.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)  # kept by an older version, readable by others
            return path.read_text().strip(), True
        with os.fdopen(fd, "w") as f:
            f.write(key)
        return key, True

    def weak_secret(self, secret: str) -> str | None:
        """Why the server must not start with `secret` (None: it may)."""
        size = len(secret.encode())
        if size >= MIN_JWT_SECRET_BYTES:
            return None
        return (
            f"the JWT secret (ENF_JWT_SECRET) is {size} bytes; it must be at least"
            f" {MIN_JWT_SECRET_BYTES}"
            " (e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))');"
            " for a trial only, ENF_ALLOW_WEAK_SECRET=1 accepts it"
        )


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
