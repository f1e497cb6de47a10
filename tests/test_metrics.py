"""``/metrics``: Prometheus text, outcomes by format, no per-address labels,
readable only from allowed networks (and with the token, when one is set)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from autoconfig import metrics
from autoconfig.config import ConfigError, load
from tests.support.admin import Admin
from tests.support.config import ADMIN_TOKEN
from tests.support.fixture_types import MakeApp
from tests.support.gunicorn import GunicornServer, http

METRICS_TOKEN = "metrics-token-0123456789"
ROOT = Path(__file__).resolve().parents[1]


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def make_client(config_data: dict[str, Any], make_app: MakeApp, **settings: Any) -> FlaskClient:
    config_data["metrics"] = {"enabled": True, **settings}
    return make_app(config_data).test_client()


def test_metrics_are_off_by_default(client: FlaskClient) -> None:
    assert client.get("/metrics").status_code == 404


def test_outcomes_are_counted_by_format_without_addresses(config_data: dict[str, Any], make_app: MakeApp) -> None:
    client = make_client(config_data, make_app)
    Admin(client).set("served@example.net", imap=True)
    for query in ["served@example.net", "served@example.net", "nobody@example.net", "a@other.example", "bad"]:
        client.get(f"/mail/config-v1.1.xml?emailaddress={query}")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    text = response.get_data(as_text=True)
    counts = samples(text, "autoconfig_requests_total")
    assert counts[(("format", "thunderbird"), ("outcome", "served"))] == 2
    assert counts[(("format", "thunderbird"), ("outcome", "declined"))] == 1
    assert counts[(("format", "thunderbird"), ("outcome", "foreign_domain"))] == 1
    assert counts[(("format", "thunderbird"), ("outcome", "bad_request"))] == 1
    assert samples(text, "autoconfig_admin_changes_total")[(("switch", "imap"), ("value", "on"))] == 1
    assert samples(text, "autoconfig_request_duration_seconds_count")[(("format", "thunderbird"),)] == 5
    for secret in ("served@", "nobody", "other.example", ADMIN_TOKEN):
        assert secret not in text


@pytest.mark.parametrize(
    ("method", "path", "body", "family"),
    [
        ("POST", "/autodiscover/autodiscover.xml", "request.xml", "outlook"),  # the nested POX blueprint
        ("GET", "/autodiscover/autodiscover.json?Email=alice@example.net&Protocol=AutodiscoverV1", None, "outlook"),
        ("GET", "/apple/mail.mobileconfig?emailaddress=alice@example.net", None, "apple"),
        ("GET", "/setup?emailaddress=alice@example.net", None, "setup"),
        ("GET", "/no/such/path", None, "unknown"),
    ],
)
def test_every_answer_is_counted_under_its_top_level_family(
    config_data: dict[str, Any],
    make_app: MakeApp,
    method: str,
    path: str,
    body: str | None,
    family: str,
) -> None:
    client = make_client(config_data, make_app)
    Admin(client).set("alice@example.net", imap=True)
    data = (ROOT / "config" / "examples" / body).read_bytes() if body else None
    client.open(path, method=method, data=data, content_type="text/xml" if data else None)
    text = client.get("/metrics").get_data(as_text=True)
    counted = samples(text, "autoconfig_request_duration_seconds_count")
    assert counted[(("format", family),)] == 1
    assert not any(value.startswith("outlook.") for labels in counted for _, value in labels)


def test_only_allowed_networks_may_read(config_data: dict[str, Any], make_app: MakeApp) -> None:
    client = make_client(config_data, make_app, allow_networks=["10.1.0.0/16"])
    assert client.get("/metrics").status_code == 404  # from 127.0.0.1
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 404),
        ({"Authorization": "Bearer wrong-token-000000000"}, 404),
        ({"Authorization": f"Bearer {METRICS_TOKEN}"}, 200),
    ],
)
def test_a_configured_token_is_required(
    config_data: dict[str, Any], make_app: MakeApp, headers: dict[str, str], status: int
) -> None:
    client = make_client(config_data, make_app, token=METRICS_TOKEN)
    assert client.get("/metrics", headers=headers).status_code == status


@pytest.mark.parametrize(
    ("settings", "key"),
    [({"allow_networks": ["not-a-net"]}, "metrics.allow_networks[0]"), ({"token": "short"}, "metrics.token")],
)
def test_bad_metrics_settings_name_the_key(
    config_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path], settings: dict[str, Any], key: str
) -> None:
    config_data["metrics"] = settings
    with pytest.raises(ConfigError) as error:
        load(write_config(config_data), env={})
    assert f": {key}: " in str(error.value)


@pytest.mark.server(config={"metrics": {"enabled": True}}, workers=2)
def test_a_scrape_sums_every_gunicorn_worker(server: GunicornServer) -> None:
    for _ in range(40):  # new connections each time: both workers answer some
        http("GET", f"{server.url}/mail/config-v1.1.xml?emailaddress=x@example.net")
    time.sleep(metrics.FLUSH_SECONDS * 1.5)  # the other worker writes its tally within a second
    text = http("GET", f"{server.url}/metrics")[2].decode()
    assert samples(text, "autoconfig_requests_total")[(("format", "thunderbird"), ("outcome", "declined"))] == 40


CHILD_WRITES_UNDER_ITS_OWN_PID = """
import os, sys
from autoconfig import metrics
metrics._install_pid_cache()
registry = metrics.Metrics()
remembered = metrics._process_id
real = remembered.value
remembered.value = 4242424  # prometheus_client must take the remembered pid, not ask os.getpid()
registry.count_request("thunderbird", "served", 0.001)
registry.flush()
remembered.value = real
registry.count_request("thunderbird", "served", 0.001)
registry.flush()
pid = os.fork()
if pid == 0:
    registry.count_request("thunderbird", "served", 0.001)
    registry.flush()
    os._exit(0 if remembered() == os.getpid() else 1)
_, status = os.waitpid(pid, 0)
print(pid, os.waitstatus_to_exitcode(status))
"""


def test_remembered_process_ids_follow_forks(tmp_path: Path) -> None:
    """Metric files are named after the writing process; the cached pid must change at fork."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD_WRITES_UNDER_ITS_OWN_PID], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    child, status = int(out[0]), int(out[1])
    assert status == 0
    written = {path.name for path in tmp_path.glob("counter_*.db")}
    assert "counter_4242424.db" in written, "the remembered pid names the file"
    assert f"counter_{child}.db" in written
    assert len(written) == 3  # the stand-in pid, the parent and the child, each its own file


# Bucket bounds themselves, values between them, zero and beyond the last bound.
LATENCIES = [0.0, 0.0004, 0.001, 0.0011, 0.0025, 0.007, 0.05, 0.3, 1.0, 4.9, 5.0, 7.5, 30.0]


def test_a_flushed_tally_equals_observing_each_request() -> None:
    """prometheus_client has no bulk observe: flush adds to the histogram's sum and buckets itself."""
    tallied = metrics.Metrics()
    reference = metrics.Metrics()
    for seconds in LATENCIES:
        tallied.count_request("apple", "served", seconds)
        reference.requests.labels(format="apple", outcome="served").inc()
        reference.latency.labels(format="apple").observe(seconds)
    tallied.count_request("apple", "bad_request", None)
    reference.requests.labels(format="apple", outcome="bad_request").inc()
    tallied.flush()

    def values(registry: metrics.Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in registry.registry.collect()
            for sample in family.samples
            if not sample.name.endswith("_created")
        }

    assert values(tallied) == values(reference)


def test_the_tally_is_written_within_a_second_without_a_scrape() -> None:
    registry = metrics.Metrics()
    registry.count_request("thunderbird", "served", 0.001)
    labels = {"format": "thunderbird", "outcome": "served"}
    deadline = time.monotonic() + 5 * metrics.FLUSH_SECONDS
    while registry.registry.get_sample_value("autoconfig_requests_total", labels) is None:
        assert time.monotonic() < deadline, "the background flush never wrote the count"
        time.sleep(0.05)
    assert registry.registry.get_sample_value("autoconfig_requests_total", labels) == 1


def test_a_scrape_includes_the_scraping_process_up_to_now(client: FlaskClient) -> None:
    client.application.extensions[metrics.EXTENSION].count_request("outlook", "declined", 0.002)
    text = client.application.extensions[metrics.EXTENSION].exposition().decode()
    assert samples(text, "autoconfig_requests_total")[(("format", "outlook"), ("outcome", "declined"))] == 1


CHILD_WRITES_ITS_OWN_TALLY = """
import os, time
from autoconfig import metrics
registry = metrics.Metrics()
for _ in range(3):  # the parent's; its writer thread starts here
    registry.count_request("thunderbird", "served", 0.001)
pid = os.fork()
if pid == 0:
    registry.count_request("thunderbird", "served", 0.001)  # the child's one, written by the child's own thread
    time.sleep(metrics.FLUSH_SECONDS * 2.5)
    os._exit(0)  # no exit hooks: only the thread can have written it
os.waitpid(pid, 0)
registry.flush()
"""


def test_a_file_another_worker_is_creating_does_not_fail_the_scrape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prometheus_client creates a worker's file empty and sizes it after: a scrape in between must still answer."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", CHILD_WRITES_ITS_OWN_TALLY], env=env, check=True, timeout=60)
    (tmp_path / "counter_4242424.db").touch()  # a worker's file, created and not yet sized
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = metrics.Metrics().exposition().decode()
    assert samples(text, "autoconfig_requests_total")[(("format", "thunderbird"), ("outcome", "served"))] == 4


def test_a_forked_child_writes_its_own_requests_and_not_its_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", CHILD_WRITES_ITS_OWN_TALLY], env=env, check=True, timeout=60)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # read the files both processes wrote
    text = metrics.Metrics().exposition().decode()
    assert samples(text, "autoconfig_requests_total")[(("format", "thunderbird"), ("outcome", "served"))] == 4
