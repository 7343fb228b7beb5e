"""Prometheus metrics of the scoring service (one registry per app instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

# Importing Feast (feast.metrics) sets PROMETHEUS_MULTIPROC_DIR for its gunicorn
# workers, which makes prometheus_client keep every value in an mmapped file
# (a pid check and a file write per update, ~5% of a scoring request). This
# service is one process that exports its own registry: values live in memory.
# Metrics read ValueClass when a labelled child is first used, so it is set
# for the process, not just while Metrics() is built.
values.ValueClass = values.MutexValue

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
# The two waits every decision shares with the others in its batch; sub-ms
# buckets, since on a healthy box each takes 0.1-1 ms and the tail is the story.
STAGE_BUCKETS = (
    0.0001,
    0.0002,
    0.0003,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
AGE_BUCKETS = (60, 600, 3600, 3 * 3600, 6 * 3600, 86_400, 2 * 86_400, 7 * 86_400, 31 * 86_400)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "pitstore_score_requests",
            "Scoring requests answered, by HTTP status, decision and fallback flag.",
            ("status", "decision", "fallback"),
            registry=r,
        )
        self.latency = Histogram(
            "pitstore_score_latency_seconds",
            "Time to answer /v1/score (headers in to audit fsync; shed requests excluded).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "pitstore_score_fallbacks",
            "Fallback decisions, by reason.",
            ("reason",),
            registry=r,
        )
        self.feature_age = Histogram(
            "pitstore_feature_age_seconds",
            "Age of the served feature row (request time - its event_timestamp), by view.",
            ("view",),
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.feature_stale = Counter(
            "pitstore_feature_stale",
            "Feature rows older than their view's TTL (treated as missing), by view.",
            ("view",),
            registry=r,
        )
        self.feature_missing = Counter(
            "pitstore_feature_missing",
            "Entities with no row in a view, by view.",
            ("view",),
            registry=r,
        )
        self.redis_errors = Counter(
            "pitstore_redis_errors",
            "Online reads that failed or ran past their deadline, by kind.",
            ("kind",),
            registry=r,
        )
        self.audit_records = Counter(
            "pitstore_audit_records", "Decisions durably appended to the audit log.", registry=r
        )
        self.online_read = Histogram(
            "pitstore_online_read_seconds",
            "One pipelined Redis round trip for the reads of a batch of requests "
            "(sent to last reply; includes time the event loop was busy elsewhere).",
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.audit_flush = Histogram(
            "pitstore_audit_flush_seconds",
            "One audit write + fsync covering a batch of decisions (group commit).",
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.model_loaded = Gauge("pitstore_model_loaded", "1 when a model is loaded.", registry=r)
        self.admission_limit = Gauge(
            "pitstore_admission_limit",
            "Requests scored at once, at most (adapts; serving/admission.py).",
            registry=r,
        )
        self.loop_lag = Gauge(
            "pitstore_loop_lag_seconds",
            "How late the event loop runs a timer, recently (backdates arrivals).",
            registry=r,
        )
        self.shed = Counter(
            "pitstore_score_shed",
            "Scoring requests refused (503 + Retry-After) because they could not be "
            "answered within the budget: 'queue' (refused on arrival, the wait ahead "
            "was too long), 'deadline' (waited, or arrived, too late).",
            ("reason",),
            registry=r,
        )
        self.replays = Counter(
            "pitstore_score_replays",
            "Retried transaction_ids answered with their first decision.",
            registry=r,
        )
        self.auth_failures = Counter(
            "pitstore_auth_failures",
            "Requests refused by authentication (401: no/unknown key) or scope (403).",
            ("status",),
            registry=r,
        )
        self.http_refused = Counter(
            "pitstore_http_refused",
            "Requests refused or dropped before reaching a route, by reason: "
            "media_type (415), too_large (413), body_timeout (408, connection "
            "closed), disconnect (the client left mid-body).",
            ("reason",),
            registry=r,
        )
        # --- POST /v1/prescreen (credit) ---
        self.prescreen_requests = Counter(
            "pitstore_prescreen_requests",
            "Pre-screening requests answered, by HTTP status, decision and why the model "
            "did not decide ('rule' for a hard-rule decline, a refer reason, or '').",
            ("status", "decision", "reason"),
            registry=r,
        )
        self.prescreen_latency = Histogram(
            "pitstore_prescreen_latency_seconds",
            "Time to answer /v1/prescreen (headers in to audit fsync; shed requests excluded).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.credit_model_loaded = Gauge(
            "pitstore_credit_model_loaded",
            "1 when a credit (PD) model is loaded; 0: every pre-screen is referred.",
            registry=r,
        )
