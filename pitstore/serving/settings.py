"""The scoring service's configuration: ONE pydantic-settings class.

Every field reads ``PITSTORE_<FIELD>`` from the environment (or ``.env``);
the Redis URL also accepts the project-wide ``REDIS_URL``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from pitstore.core.config import Settings


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PITSTORE_", env_file=".env", extra="ignore", populate_by_name=True
    )

    home: Path = Field(
        Path("data"),
        description="PITSTORE_HOME: models/ and (by default) audit/ live here.",
    )
    redis_url: str = Field(
        "redis://localhost:6379/0",
        validation_alias=AliasChoices("PITSTORE_REDIS_URL", "REDIS_URL", "redis_url"),
        description="Online store (Feast's Redis layout).",
    )
    model_version: str = Field(
        "promoted", description='A model version under models/, or "promoted".'
    )
    credit_model_version: str = Field(
        "promoted",
        description="The credit (PD) model for /v1/prescreen: a version under models/, or "
        '"promoted" (the version promoted for the credit_v1 service).',
    )
    shadow_model_version: str | None = Field(
        None,
        description="A challenger model version scored in shadow: every request the "
        "champion (model_version) scores is scored by it too, after the champion, from "
        "the same features; its score and decision go to the audit record's 'shadow' "
        "field only, never into the answer. Unset: no shadow. See docs/serving.md.",
    )
    budget_ms: int = Field(100, ge=5, le=10_000, description="Time budget per /v1/score request.")
    reasons_for: Literal["adverse", "all"] = Field(
        "adverse",
        description="Which decisions carry their exact reasons in the answer and the log: "
        "'adverse' (review and decline: what a customer or reviewer is owed; an approval's "
        "reasons are recomputed exactly by `pitstore explain`) or 'all' (every decision; "
        "TreeSHAP then costs about 150 us of CPU per request).",
    )
    redis_share: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Share of the budget the Redis read may use; the rest is for "
        "scoring, the fallback path and the audit append.",
    )
    audit_dir: Path | None = Field(None, description="Default: <home>/audit.")
    audit_rotate_mb: int = Field(64, ge=1, description="Start a new audit file past this size.")
    audit_prefill_kb: int = Field(
        64,
        ge=0,
        description="Pad each audit file this far ahead of its data (newlines, on a "
        "background thread), so a record's fdatasync flushes data alone, not the file's "
        "size as well; 0 appends plainly. See serving/audit.py.",
    )
    max_in_flight: int = Field(
        64,
        ge=1,
        le=4096,
        description="Requests scored at once, at most (serving/admission.py lowers the "
        "bound while admitted requests run slower than a third of the budget); later "
        "ones wait their turn, in order, only while their deadline allows (else a 503). "
        "Why a bound: a request takes a few event-loop iterations (read, decide, "
        "log) and an iteration does a step of every request in flight, so with no "
        "bound a burst slowed every request alike and pushed Redis reads past their "
        "deadline. Why 64, not less: each completion admits as many waiters as "
        "finished, so a small bound kept requests in the small groups they came "
        "in, and reads and audit writes batched 2-5 deep where they could have "
        "gone 10-60 (measured at 1,300 req/s, Poisson: p99 91 ms with 16, 21 ms "
        "with 64).",
    )
    audit_key: SecretStr | None = Field(
        None,
        description="HMAC key signing the audit log's checkpoints (16+ bytes). Unset: "
        "<home>/audit.key, 32 random bytes made (mode 0600) by the first server. "
        "See docs/audit.md.",
    )
    gil_switch_interval_ms: float = Field(
        0.1,
        gt=0,
        le=100,
        description="sys.setswitchinterval for the server process. Measured with the "
        "audit log's former fsync thread, which needed the GIL to start and to finish "
        "each flush: at CPython's 5 ms default a busy event loop kept it waiting, and "
        "every request in the flush with it (p99 at ~600 req/s: 82-99 ms at 5 ms, "
        "~55 ms at 0.1 ms).",
    )
    max_body_bytes: int = Field(
        8_192, ge=512, description="Larger request bodies get a 413, before they are read in full."
    )
    body_timeout_s: float = Field(
        3.0,
        gt=0,
        le=60,
        description="A request's body must arrive within this many seconds of its "
        "headers, or the request gets a 408 and its connection is closed. Why: "
        "uvicorn has no body-read timeout, so a client stalled mid-body (or one "
        "that declared a longer content-length than it sent) held its connection "
        "and a task open for as long as it liked (75 s+ seen).",
    )
    api_keys: str = Field(
        "",
        repr=False,
        description="API keys allowed to call /v1/*: entries '<name>:<sha256 hex of the "
        "key>:<scope>[,<scope>]', separated by ';' or newlines (scopes: score, "
        "decisions:read). Only hashes live here; `pitstore keys new` makes a key "
        "and prints its entry. Empty (and no api_keys_file): every /v1 call gets a 401.",
    )
    api_keys_file: Path | None = Field(
        None, description="A file of api_keys entries, one a line ('#' comments)."
    )
    card_token_key: str = Field(
        "",
        repr=False,
        description="HMAC-SHA256 key (hex, >= 32 bytes) that turns card_id into "
        "tok_<hex> before anything is logged or returned. Empty: a key generated once "
        "into <home>/secrets/card-token.key (0600) and reused on every start.",
    )
    idempotency_entries: int = Field(
        200_000,
        ge=0,
        description="transaction_ids remembered (with their decision) so a retry gets "
        "the first decision back; at start-up the index is rebuilt from the audit log "
        "of the last idempotency_window_s. 0 turns replays off.",
    )
    idempotency_window_s: int = Field(
        86_400, ge=0, description="How far back the audit log is read at start-up."
    )
    retry_after_s: int = Field(
        1, ge=1, le=60, description="Retry-After of a shed (503) /v1/score request."
    )
    max_clock_skew_s: int = Field(
        300, ge=0, description="event_ts may be at most this far in the future."
    )
    max_event_age_s: int = Field(
        7 * 86_400,
        ge=60,
        description="event_ts older than this is refused (store-and-forward limit).",
    )

    @property
    def resolved_home(self) -> Path:
        return self.home.resolve()

    @property
    def resolved_audit_dir(self) -> Path:
        return (self.audit_dir or self.resolved_home / "audit").resolve()

    @property
    def budget_s(self) -> float:
        return self.budget_ms / 1000.0

    @property
    def redis_timeout_s(self) -> float:
        return self.budget_ms * self.redis_share / 1000.0

    def pitstore_settings(self) -> Settings:
        """The core settings (models, registry paths) for the same home and Redis."""
        return Settings(pitstore_home=self.resolved_home, redis_url=self.redis_url)
