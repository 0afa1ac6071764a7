"""GET /metrics, parsed by prometheus_client's own parser: expiry per CA and per leaf (capped,
the rest in buckets), rows by status, queue depths from the real Redis, and task runs as the
workers record them in the database."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import select

from infra.local import free_port
from shared import taskstats
from shared.contracts import TASK_SWEEP
from shared.db.models import Authority, Certificate, Delivery
from tests.services.api.conftest import ApiHarness

INFRA = Path(__file__).parents[3] / "infra"
HOSTS = ["hq-mgmt01", "hq-rec01", "hq-rec02", "aar-rec01", "sto-rec01"]


def scrape(api: ApiHarness, token: str | None = None) -> dict[str, list[Any]]:
    response = api.get("/metrics", token=token)
    assert response.status_code == 200, response.data[:300]
    assert response.mimetype == "text/plain"
    families = text_string_to_metric_families(response.get_data(as_text=True))
    return {family.name: family.samples for family in families}


def values(samples: list[Any], name: str, **labels: str) -> list[float]:
    return [
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def issue(api: ApiHarness, hosts: list[str]) -> None:
    response = api.post(
        "/api/v1/issuance-requests/bulk", json={"requests": [{"host": h} for h in hosts]}
    )
    assert response.status_code == 202, response.get_json()
    assert len(api.run_issuer().issued) == len(hosts)


def test_expiry_of_every_ca_and_of_the_first_leaves_up_to_the_cap(api: ApiHarness) -> None:
    api.apply_inventory()
    issue(api, HOSTS)
    runtime = api.app.extensions["certfleet"]
    runtime.settings = dataclasses.replace(runtime.settings, metrics_leaf_cap=2)
    with api.db.session() as session:
        # Spread the expiries so that "the first to expire" is one answer.
        certificates = session.scalars(select(Certificate).order_by(Certificate.id)).all()
        for days, certificate in zip((200, 5, 90, 20, 400), certificates, strict=True):
            certificate.not_after = api.clock.now() + dt.timedelta(days=days)
        soonest = sorted(certificates, key=lambda c: c.not_after)[:2]
        expected_leaves = {c.serial: c.not_after.timestamp() for c in soonest}
        [authority] = session.scalars(select(Authority)).all()
        ca_name, ca_expiry = authority.name, authority.not_after

    metrics = scrape(api, api.token("auditor"))
    expiry = metrics["certfleet_certificate_expiration_timestamp_seconds"]
    name = "certfleet_certificate_expiration_timestamp_seconds"
    assert ca_expiry is not None
    assert values(expiry, name, kind="ca", authority=ca_name) == [ca_expiry.timestamp()]
    leaves = {s.labels["serial"]: s.value for s in expiry if s.labels["kind"] == "leaf"}
    assert leaves == pytest.approx(expected_leaves)
    assert {s.labels["host"] for s in expiry if s.labels["kind"] == "leaf"} <= set(HOSTS)
    listed = metrics["certfleet_certificate_expiration_leaves_listed"]
    assert values(listed, "certfleet_certificate_expiration_leaves_listed") == [2]

    windows = metrics["certfleet_certificates_expiring_within_days"]
    within = {s.labels["days"]: s.value for s in windows}
    assert within["7"] == 1 and within["30"] == 2 and within["90"] == 3
    assert within["365"] == 4 and within["+Inf"] == 5
    certs = metrics["certfleet_certificates"]
    assert values(certs, "certfleet_certificates", status="active") == [5]
    assert values(certs, "certfleet_certificates", status="revoked") == [0]
    requests = metrics["certfleet_issuance_requests"]
    assert values(requests, "certfleet_issuance_requests", status="issued") == [5]


def test_queue_depths_come_from_redis_and_the_scrape_survives_without_it(
    api: ApiHarness,
) -> None:
    api.apply_inventory()
    api.post("/api/v1/issuance-requests/bulk", json={"requests": [{"host": h} for h in HOSTS]})
    waiting = len(api.queued_messages())
    assert waiting >= 1
    metrics = scrape(api)
    depth = metrics["certfleet_queue_depth"]
    assert values(depth, "certfleet_queue_depth", queue="issue") == [waiting]
    trust_pushes = api.redis.llen("distribute")  # the inventory's hosts get the trust bundle
    assert values(depth, "certfleet_queue_depth", queue="distribute") == [trust_pushes]
    assert values(depth, "certfleet_queue_depth", queue="expiry") == [0]
    queued = metrics["certfleet_issuance_requests"]
    assert values(queued, "certfleet_issuance_requests", status="queued") == [len(HOSTS)]

    runtime = api.app.extensions["certfleet"]
    live = runtime.redis_client
    runtime.redis_client = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    try:
        metrics = scrape(api)
    finally:
        runtime.redis_client = live
    assert metrics["certfleet_queue_depth"] == []
    assert values(metrics["certfleet_certificates"], "certfleet_certificates", status="active")


def test_task_runs_durations_and_last_success_add_up_over_processes(api: ApiHarness) -> None:
    now = api.clock.now()
    with api.db.session() as session:
        for seconds, outcome in ((0.02, "success"), (0.3, "success"), (7.0, "retry")):
            taskstats.record(session, "certfleet.issuer.issue_batch", seconds, outcome, now)
        taskstats.record(
            session, "certfleet.watcher.sweep", 400.0, "failure", now - dt.timedelta(hours=1)
        )
    metrics = scrape(api)
    runs = metrics["certfleet_task_runs"]
    issue_batch = {
        s.labels["outcome"]: s.value
        for s in runs
        if s.labels["task"] == "certfleet.issuer.issue_batch" and s.name.endswith("_total")
    }
    assert issue_batch == {"success": 2, "retry": 1, "failure": 0}
    durations = metrics["certfleet_task_duration_seconds"]
    buckets = {
        s.labels["le"]: s.value
        for s in durations
        if s.name.endswith("_bucket") and s.labels["task"] == "certfleet.issuer.issue_batch"
    }
    assert buckets["0.05"] == 1 and buckets["0.25"] == 1 and buckets["0.5"] == 2
    assert buckets["5.0"] == 2 and buckets["10.0"] == 3 and buckets["+Inf"] == 3
    name = "certfleet_task_duration_seconds_sum"
    assert values(durations, name, task="certfleet.issuer.issue_batch")[0] == 7.32
    assert values(
        durations, "certfleet_task_duration_seconds_count", task="certfleet.watcher.sweep"
    ) == [1]
    last = metrics["certfleet_task_last_success_timestamp_seconds"]
    assert values(
        last, "certfleet_task_last_success_timestamp_seconds", task="certfleet.issuer.issue_batch"
    ) == [now.timestamp()]
    assert (
        values(
            last, "certfleet_task_last_success_timestamp_seconds", task="certfleet.watcher.sweep"
        )
        == []
    )
    failed = metrics["certfleet_task_last_failure_timestamp_seconds"]
    assert values(
        failed, "certfleet_task_last_failure_timestamp_seconds", task="certfleet.watcher.sweep"
    ) == [(now - dt.timedelta(hours=1)).timestamp()]


def test_metrics_need_a_valid_token(api: ApiHarness) -> None:
    assert api.get("/metrics", token="").status_code == 401
    assert api.get("/metrics", token="cf_not-a-token").status_code == 401


def test_grafana_dashboard_and_alerts_use_only_metrics_that_exist(api: ApiHarness) -> None:
    """Every certfleet_* series that infra/grafana and infra/prometheus query is one that a
    real scrape exposes; the dashboard is valid JSON and the rules valid YAML."""
    api.apply_inventory()
    issue(api, ["hq-rec01"])
    with api.db.session() as session:
        taskstats.record(session, TASK_SWEEP, 0.1, "success", api.clock.now())
    exposed = set()
    for samples in scrape(api).values():
        exposed |= {s.name for s in samples}
    dashboard = json.loads((INFRA / "grafana" / "certfleet.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((INFRA / "prometheus" / "alerts.yml").read_text())
    queries += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(queries) >= 15
    used = {name for query in queries for name in re.findall(r"certfleet_[a-z_]+", query)}
    assert used - exposed == set()
    assert {p["id"] for p in dashboard["panels"]} == set(range(1, len(dashboard["panels"]) + 1))
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["authorization"]["type"] == "Bearer"


def test_probes_count_renewed_but_not_bound_for_certificates_in_use(api: ApiHarness) -> None:
    api.apply_inventory()
    issue(api, ["hq-rec01", "hq-rec02", "aar-rec01"])
    with api.db.session() as session:
        certificates = session.scalars(select(Certificate).order_by(Certificate.id)).all()
        states = ("mismatch", "match", "mismatch")
        for certificate, state in zip(certificates, states, strict=True):
            session.add(
                Delivery(
                    host_id=certificate.host_id,
                    kind="certificate",
                    certificate_id=certificate.id,
                    method="agent",
                    status="installed" if state == "mismatch" else "verified",
                    probe_state=state,
                )
            )
        certificates[2].status = "superseded"  # its host has moved on: not counted
    metrics = scrape(api)
    probes = {s.labels["state"]: s.value for s in metrics["certfleet_certificate_probes"]}
    assert probes == {"unprobed": 0, "none": 0, "match": 1, "mismatch": 1, "unreachable": 0}
    deliveries = metrics["certfleet_deliveries"]
    name = "certfleet_deliveries"
    assert values(deliveries, name, kind="certificate", status="installed") == [2]
    assert values(deliveries, name, kind="certificate", status="verified") == [1]
