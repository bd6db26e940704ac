"""Prometheus metrics: what a call counts, bounded labels, the scrape-time
state, and the merge of several processes' files (gateway.metrics)."""

import os
import subprocess
import sys
import textwrap

from prometheus_client.parser import text_string_to_metric_families

from gateway import metrics
from gateway.pipeline import Call
from gateway.usage.collector import Collector
from gateway.usage.prices import PriceCatalog
from gateway.usage.record import usage_record
from gateway.usage.spool import SpoolWriter
from gateway.usage.tokens import Usage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRICES = PriceCatalog.builtin().with_overrides([
    {"provider": "anthropic", "model": "claude-sonnet-4-5", "input_usd_per_mtok": 3.0, "output_usd_per_mtok": 15.0}])


def sample(name, **labels):
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def parsed(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def finished_call(model="claude-sonnet-4-5-20250929", **fields):
    call = Call("req_m", 0.0, provider="anthropic", agent_id="bot", model=model, prices=PRICES, decision="allowed",
                status=200, forwarded=True, upstream_s=0.02)
    for key, value in fields.items():
        setattr(call, key, value)
    return call


def test_model_labels_are_catalog_names_or_other():
    assert metrics.model_label(PRICES, "anthropic", "claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
    assert metrics.model_label(PRICES, "anthropic", "claude-sonnet-4-5") == "claude-sonnet-4-5"
    # An agent cannot mint label values: an invented name (even a key-shaped one) is "other".
    assert metrics.model_label(PRICES, "anthropic", "AKIAQYLPMN5HHHFPZAM2") == "other"
    assert metrics.model_label(PRICES, "openai", "claude-sonnet-4-5") == "other"
    assert metrics.model_label(None, "anthropic", "claude-sonnet-4-5") == "other"
    assert metrics.model_label(PRICES, "anthropic", None) == "other"


def test_a_call_counts_its_request_tokens_cost_and_redactions():
    labels = dict(provider="anthropic", model="claude-sonnet-4-5")
    before = {kind: sample("mitrity_tokens_total", kind=kind, **labels) for kind in metrics.TOKEN_KINDS}
    cost_before = sample("mitrity_estimated_cost_usd_total", **labels)
    calls_before = sample("mitrity_requests_total", provider="anthropic", decision="redacted", reason="none")
    request_before = sample("mitrity_redactions_total", provider="anthropic", phase="request")
    response_before = sample("mitrity_redactions_total", provider="anthropic", phase="response")
    upstream_before = sample("mitrity_upstream_response_seconds_count", provider="anthropic")

    call = finished_call(decision="redacted", redactions=3, prompt_redactions=2,
                         usage=Usage(1150, 20, 1000, 50, "claude-sonnet-4-5-20250929"))
    record = usage_record(call, 12.0)
    metrics.observe_call(call, 0.012, record)

    after = {kind: sample("mitrity_tokens_total", kind=kind, **labels) for kind in metrics.TOKEN_KINDS}
    assert {k: after[k] - before[k] for k in after} == {
        "input": 1150, "output": 20, "cache_read_input": 1000, "cache_creation_input": 50}
    assert sample("mitrity_estimated_cost_usd_total", **labels) - cost_before == record["estimated_cost_usd"] > 0
    assert sample("mitrity_requests_total", provider="anthropic", decision="redacted", reason="none") \
        == calls_before + 1
    assert sample("mitrity_redactions_total", provider="anthropic", phase="request") == request_before + 2
    assert sample("mitrity_redactions_total", provider="anthropic", phase="response") == response_before + 1
    assert sample("mitrity_upstream_response_seconds_count", provider="anthropic") == upstream_before + 1


def test_failures_count_by_their_reason():
    before = sample("mitrity_upstream_errors_total", provider="openai", reason="upstream_timeout")
    timed_out = finished_call(provider="openai", model="gpt-4o-mini", reason="upstream_timeout", status=504,
                              upstream_s=None)
    metrics.observe_call(timed_out, 5.0, usage_record(timed_out, 5000.0))
    assert sample("mitrity_upstream_errors_total", provider="openai", reason="upstream_timeout") == before + 1
    assert sample("mitrity_requests_total", provider="openai", decision="allowed", reason="upstream_timeout") >= 1

    blocked = finished_call(reason="response_blocked", status=502, usage=Usage(10, 5))
    before = sample("mitrity_requests_total", provider="anthropic", decision="blocked", reason="response_blocked")
    metrics.observe_call(blocked, 0.1, usage_record(blocked, 100.0))
    assert sample("mitrity_requests_total", provider="anthropic", decision="blocked", reason="response_blocked") \
        == before + 1

    unrouted = Call("req_n", 0.0, reason="not_found", status=404)
    before = sample("mitrity_requests_total", provider="none", decision="blocked", reason="not_found")
    metrics.observe_call(unrouted, 0.001)
    metrics.observe_refused("headers_too_large")
    assert sample("mitrity_requests_total", provider="none", decision="blocked", reason="not_found") == before + 1
    assert sample("mitrity_requests_total", provider="none", decision="blocked", reason="headers_too_large") >= 1


def test_spool_backlog_follows_the_collector(tmp_path):
    spool_dir, store = tmp_path / "spool", tmp_path / "usage.db"
    writer = SpoolWriter(str(spool_dir), "worker-1")
    record = usage_record(finished_call(usage=Usage(10, 5)), 1.0)
    for n in range(3):
        assert writer.write({**record, "id": f"req_{n}"})
    files, backlog = metrics.spool_backlog(str(spool_dir))
    assert files == 1 and backlog == os.path.getsize(writer.path) > 0
    collector = Collector(str(spool_dir), str(store))
    try:
        collector.step()
    finally:
        collector.close()
    assert metrics.spool_backlog(str(spool_dir)) == (1, 0)  # read, not yet finished (its writer lives)
    assert metrics.spool_backlog(str(tmp_path / "missing")) == (0, 0)


def test_exposition_parses_and_carries_the_scrape_time_state(tmp_path):
    spool_dir = tmp_path / "spool"
    SpoolWriter(str(spool_dir), "worker-1").write({"id": "req_x"})
    samples = parsed(metrics.exposition(spool_dir=str(spool_dir)))
    assert samples[("mitrity_usage_spool_files", ())] == 1
    assert samples[("mitrity_usage_spool_backlog_bytes", ())] > 0
    assert ("mitrity_usage_records_dropped_total", ()) in samples


def test_files_of_several_processes_are_merged(tmp_path):
    """Two processes count into their own files; one exposition sums them, and
    keeps counting a process after it has exited."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    child = textwrap.dedent("""
        import sys
        from gateway import metrics
        for _ in range(int(sys.argv[1])):
            metrics.observe_refused("invalid_request")
        metrics.USAGE_DROPPED.inc(int(sys.argv[1]))
        metrics.CALL_SECONDS.labels("openai", "false").observe(0.2)
    """)
    env = {**os.environ, metrics.MULTIPROC_ENV: str(directory), "PYTHONPATH": ROOT}
    for count in (3, 4):
        subprocess.run([sys.executable, "-c", child, str(count)], env=env, check=True, cwd=ROOT)
    assert len(list(directory.glob("counter_*.db"))) == 2
    os.environ[metrics.MULTIPROC_ENV] = str(directory)
    try:
        samples = parsed(metrics.exposition())
    finally:
        del os.environ[metrics.MULTIPROC_ENV]
    assert samples[("mitrity_requests_total", (("decision", "blocked"), ("provider", "none"),
                                               ("reason", "invalid_request")))] == 7
    assert samples[("mitrity_usage_records_dropped_total", ())] == 7
    assert samples[("mitrity_request_duration_seconds_count", (("provider", "openai"), ("stream", "false")))] == 2
    assert samples[("mitrity_request_duration_seconds_bucket", (("le", "0.25"), ("provider", "openai"),
                                                                ("stream", "false")))] == 2
    assert samples[("mitrity_request_duration_seconds_bucket", (("le", "0.1"), ("provider", "openai"),
                                                                ("stream", "false")))] == 0


def test_a_removed_directory_does_not_stop_a_process_from_counting(tmp_path):
    directory = tmp_path / "removed" / "metrics"
    child = "from gateway import metrics; metrics.observe_refused('invalid_request')"
    env = {**os.environ, metrics.MULTIPROC_ENV: str(directory), "PYTHONPATH": ROOT}
    subprocess.run([sys.executable, "-c", child], env=env, check=True, cwd=ROOT)
    assert list(directory.glob("counter_*.db"))



def test_a_file_still_being_created_does_not_fail_the_scrape(tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"")   # opened by a starting process, not yet sized
    os.environ[metrics.MULTIPROC_ENV] = str(directory)
    try:
        assert b"mitrity_usage_spool_files" in metrics.exposition(spool_dir=str(tmp_path / "spool"))
    finally:
        del os.environ[metrics.MULTIPROC_ENV]
