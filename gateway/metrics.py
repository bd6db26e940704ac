"""Prometheus metrics, aggregated across the gateway's processes.

Theory of operation
-------------------
Every process that counts (the workers, the usage collector, policy-sync)
writes its counters and histograms with prometheus-client's multiprocess
mode: one small memory-mapped file per process and metric type in the
directory named by ``$PROMETHEUS_MULTIPROC_DIR``, which the gunicorn master
sets, empties at start and passes on to every process it starts
(gunicorn.conf.py). Counting is a memory store into that mapping: no system
call, lock between processes or network on the request path. The admin
``/metrics`` route merges every process's files, so the totals survive a
worker's or a helper's restart (a dead process's file keeps its counts).

State that is a fact at scrape time rather than a count (the policy
generation and its age, the usage spool's backlog) is read when ``/metrics``
is asked, by ``StateCollector``, from the shared-memory segment and the spool
directory.

Without ``$PROMETHEUS_MULTIPROC_DIR`` (unit tests, tools) the same metrics
count in this process's memory.

Labels are bounded and never carry content or keys: provider, decision,
reason code (the fixed set of ``gateway.errors``), whether the call streamed,
a token kind, and a model name only when it is a price catalog entry's name
(the built-in catalog or the bundle's ``prices``), else ``other``: an agent
cannot mint label values by inventing model names.

This module must be imported only after ``$PROMETHEUS_MULTIPROC_DIR`` is set
(prometheus-client picks its storage at import), which is why the master
never imports it.
"""

import glob
import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from . import metrics_dir
from .usage.record import recorded_decision
from .usage.spool import spool_backlog

MULTIPROC_ENV = metrics_dir.ENV
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER_MODEL = "other"
NO_PROVIDER = "none"
NO_REASON = "none"
# Seconds; a call's whole time includes generation, so the top buckets are long.
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TOKEN_KINDS = ("input", "output", "cache_read_input", "cache_creation_input")

if os.environ.get(MULTIPROC_ENV):
    # The files are created as the metrics below are: a directory removed
    # while the gateway runs must not keep a new worker from starting.
    os.makedirs(os.environ[MULTIPROC_ENV], mode=0o700, exist_ok=True)

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "mitrity_requests", "Calls answered on the data listener, by provider, decision (as in the usage record) "
    "and reason code (none when the call ended well; an allowed call the provider failed has its code).",
    ["provider", "decision", "reason"], registry=REGISTRY)
CALL_SECONDS = Histogram(
    "mitrity_request_duration_seconds", "Time from a call's arrival to the end of its answer "
    "(for streams, the end of the stream).", ["provider", "stream"], buckets=CALL_BUCKETS, registry=REGISTRY)
UPSTREAM_SECONDS = Histogram(
    "mitrity_upstream_response_seconds", "Time from forwarding a call to the provider's response headers.",
    ["provider"], buckets=UPSTREAM_BUCKETS, registry=REGISTRY)
UPSTREAM_ERRORS = Counter(
    "mitrity_upstream_errors", "Calls the provider failed: unreachable, timed out, cut or unreadable answer.",
    ["provider", "reason"], registry=REGISTRY)
TOKENS = Counter(
    "mitrity_tokens", "Tokens the providers reported; input includes cache reads and writes, which are also "
    "counted under their own kinds.", ["provider", "model", "kind"], registry=REGISTRY)
COST = Counter(
    "mitrity_estimated_cost_usd", "Estimated cost from the price catalog (an estimate, not billing data); "
    "calls of uncatalogued models add nothing.", ["provider", "model"], registry=REGISTRY)
REDACTIONS = Counter(
    "mitrity_redactions", "Findings redacted, in prompts (request) and answers (response).",
    ["provider", "phase"], registry=REGISTRY)
USAGE_DROPPED = Counter(
    "mitrity_usage_records_dropped", "Usage records a worker could not hand to the collector "
    "(spool at its cap, or a write error); each is also logged.", registry=REGISTRY)
USAGE_STORED = Counter(
    "mitrity_usage_records_stored", "Usage records the collector committed to the store.", registry=REGISTRY)
USAGE_SKIPPED = Counter(
    "mitrity_usage_lines_skipped", "Spool lines the collector could not store (corrupt, torn or refused).",
    registry=REGISTRY)
POLICY_REJECTED = Counter(
    "mitrity_policy_bundles_rejected", "Policy bundles policy-sync rejected (the last good one stayed).",
    registry=REGISTRY)


def model_label(prices, provider, model):
    """The catalog entry's model name for ``model``, else ``other``: bounded by the catalog."""
    price = prices.lookup(provider, model) if prices is not None and model else None
    return price.model if price is not None else OTHER_MODEL


def observe_call(call, latency_s, record=None):
    """Count one data-listener call once it has ended (``call`` is a pipeline Call)."""
    provider = call.provider or NO_PROVIDER
    REQUESTS.labels(provider, recorded_decision(call), call.reason or NO_REASON).inc()
    CALL_SECONDS.labels(provider, "true" if call.stream else "false").observe(latency_s)
    if call.upstream_s is not None:
        UPSTREAM_SECONDS.labels(provider).observe(call.upstream_s)
    if call.reason in ("upstream_error", "upstream_timeout"):
        UPSTREAM_ERRORS.labels(provider, call.reason).inc()
    if call.prompt_redactions:
        REDACTIONS.labels(provider, "request").inc(call.prompt_redactions)
    if call.redactions > call.prompt_redactions:
        REDACTIONS.labels(provider, "response").inc(call.redactions - call.prompt_redactions)
    if record is None or not record["total_tokens"]:
        return
    model = model_label(call.prices, provider, record["model"])
    for kind in TOKEN_KINDS:
        count = record[kind + "_tokens"]
        if count:
            TOKENS.labels(provider, model, kind).inc(count)
    if record["estimated_cost_usd"]:
        COST.labels(provider, model).inc(record["estimated_cost_usd"])


def observe_refused(reason):
    """Count a request the worker refused before it could be routed (malformed HTTP)."""
    REQUESTS.labels(NO_PROVIDER, "blocked", reason).inc()


class StateCollector:
    """Gauges read at scrape time: the policy in force and the usage hand-off backlog."""

    def __init__(self, policies=None, spool_dir=None):
        self.policies = policies
        self.spool_dir = spool_dir

    def collect(self):
        if self.policies is not None:
            yield from self._policy()
        if self.spool_dir is not None:
            yield from self._spool()

    def _policy(self):
        policy = self.policies.current()
        loaded = GaugeMetricFamily("mitrity_policy_loaded", "1 when a valid policy is in force, else 0.")
        loaded.add_metric([], 0 if policy is None else 1)
        yield loaded
        if policy is None:
            return
        generation = GaugeMetricFamily("mitrity_policy_generation",
                                       "The shared-memory generation of the policy in force.")
        generation.add_metric([], policy.generation)
        yield generation
        age = GaugeMetricFamily("mitrity_policy_age_seconds", "Seconds since the policy in force was published.")
        age.add_metric([], policy.age_s())
        yield age
        heartbeat = self.policies.heartbeat_age_s()
        if heartbeat is not None:
            beat = GaugeMetricFamily("mitrity_policy_sync_heartbeat_age_seconds",
                                     "Seconds since policy-sync last stamped the segment (it does every second).")
            beat.add_metric([], heartbeat)
            yield beat

    def _spool(self):
        files, backlog = spool_backlog(self.spool_dir)
        count = GaugeMetricFamily("mitrity_usage_spool_files", "Usage spool files not yet consumed.")
        count.add_metric([], files)
        yield count
        waiting = GaugeMetricFamily("mitrity_usage_spool_backlog_bytes",
                                    "Bytes of usage records spooled but not yet stored by the collector.")
        waiting.add_metric([], backlog)
        yield waiting


class _Merged(MultiProcessCollector):
    """Every process's files, less one that a starting process has just created
    and not yet sized (it is empty for an instant, and would fail the scrape)."""

    def collect(self):
        files = []
        for path in glob.glob(os.path.join(self._path, "*.db")):
            try:
                if os.path.getsize(path) > 0:
                    files.append(path)
            except FileNotFoundError:
                pass
        return self.merge(files, accumulate=True)


class _Local:
    """This process's own metrics, when there is no multiprocess directory."""

    def collect(self):
        return REGISTRY.collect()


def exposition(policies=None, spool_dir=None) -> bytes:
    """The Prometheus text exposition of every process's metrics plus the scrape-time state."""
    registry = CollectorRegistry(auto_describe=False)
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        _Merged(registry, directory)
    else:
        registry.register(_Local())
    registry.register(StateCollector(policies, spool_dir))
    return generate_latest(registry)
