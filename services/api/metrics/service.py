"""What GET /metrics says, read at scrape time from the database and Redis.

Nothing is counted in the API process itself: every figure comes from the database (the
source of truth, where the workers also count their task runs, see shared.taskstats) or from
Redis' queue lengths, so any API worker on any machine answers the same scrape the same way."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate
from typing import Any

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from services.api.auth import Principal
from shared import access
from shared.contracts import QUEUE_DISTRIBUTE, QUEUE_EXPIRY, QUEUE_ISSUE
from shared.db.models import (
    CAMPAIGN_STATUSES,
    CERTIFICATE_STATUSES,
    DELIVERY_KINDS,
    DELIVERY_STATUSES,
    PROBE_STATES,
    REQUEST_STATUSES,
    Authority,
    Campaign,
    Certificate,
    Delivery,
    Host,
    IssuanceRequest,
    Site,
    TaskDuration,
    TaskRun,
)
from shared.taskstats import DURATION_BUCKETS, le_label

EXPIRY_WINDOWS_DAYS = (7, 14, 30, 60, 90, 180, 365)
# kombu's Redis transport keeps a queue as one list per priority step: "issue", then
# "issue\x06\x163" and so on for priorities 3, 6 and 9.
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
QUEUES = (QUEUE_ISSUE, QUEUE_DISTRIBUTE, QUEUE_EXPIRY)
EXPIRY_LABELS = ["kind", "authority", "site", "host", "serial"]


class Snapshot:
    """A collector for prometheus_client's exposition: the metrics as they stand now."""

    def __init__(self, metrics: Sequence[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._metrics


def snapshot(
    session: Session, client: redis.Redis, now: dt.datetime, leaf_cap: int, who: Principal
) -> Snapshot:
    """The metrics as `who` may read them: a reader scoped to one site gets that site's rows
    only (shared.access); the CAs, queues and task runs are the deployment's, not a site's."""
    return Snapshot(
        [
            *expirations(session, now, leaf_cap, who),
            counts_by(
                session,
                "certfleet_certificates",
                "Certificates by status",
                Certificate.status,
                CERTIFICATE_STATUSES,
                access.scope(
                    select(Certificate.status, func.count()).join(
                        Host, Host.id == Certificate.host_id
                    ),
                    Host.site_id,
                    who,
                ),
            ),
            counts_by(
                session,
                "certfleet_issuance_requests",
                "Issuance requests by status",
                IssuanceRequest.status,
                REQUEST_STATUSES,
                access.scope(
                    select(IssuanceRequest.status, func.count()).join(
                        Host, Host.id == IssuanceRequest.host_id
                    ),
                    Host.site_id,
                    who,
                ),
            ),
            counts_by(
                session,
                "certfleet_campaigns",
                "Campaigns by status",
                Campaign.status,
                CAMPAIGN_STATUSES,
                access.scope(select(Campaign.status, func.count()), Campaign.site_id, who),
            ),
            deliveries(session, who),
            probes(session, who),
            queue_depths(client),
            *task_metrics(session),
        ]
    )


def expirations(
    session: Session, now: dt.datetime, leaf_cap: int, who: Principal
) -> Iterable[Metric]:
    """Every CA's expiry, the `leaf_cap` active leaf certificates that expire first one by
    one, and every active leaf counted by the days it has left."""
    family = GaugeMetricFamily(
        "certfleet_certificate_expiration_timestamp_seconds",
        "When a certificate expires (Unix time): every CA in use, and the active leaf"
        " certificates that expire first, up to CERTFLEET_METRICS_LEAF_CAP",
        labels=EXPIRY_LABELS,
    )
    authorities = session.execute(
        select(Authority.name, Authority.serial, Authority.not_after).where(
            Authority.status.in_(("active", "retiring")), Authority.not_after.is_not(None)
        )
    )
    for name, serial, not_after in authorities:
        if not_after is not None:
            family.add_metric(["ca", name, "", "", serial or ""], not_after.timestamp())
    leaves = session.execute(
        access.scope(
            select(Authority.name, Site.name, Host.name, Certificate.serial, Certificate.not_after)
            .join(Host, Certificate.host_id == Host.id)
            .join(Site, Host.site_id == Site.id)
            .join(Authority, Certificate.authority_id == Authority.id)
            .where(Certificate.status == "active")
            .order_by(Certificate.not_after, Certificate.id)
            .limit(leaf_cap),
            Host.site_id,
            who,
        )
    )
    listed = 0
    for authority, site, host, serial, not_after in leaves:
        family.add_metric(["leaf", authority, site, host, serial], not_after.timestamp())
        listed += 1
    yield family

    windows = GaugeMetricFamily(
        "certfleet_certificates_expiring_within_days",
        "Active leaf certificates that expire within `days` days (+Inf: all active)",
        labels=["days"],
    )
    row = session.execute(
        access.scope(
            select(
                *(
                    func.count().filter(Certificate.not_after <= now + dt.timedelta(days=days))
                    for days in EXPIRY_WINDOWS_DAYS
                ),
                func.count(),
            )
            .join(Host, Host.id == Certificate.host_id)
            .where(Certificate.status == "active"),
            Host.site_id,
            who,
        )
    ).one()
    for days, count in zip([*map(str, EXPIRY_WINDOWS_DAYS), "+Inf"], row, strict=True):
        windows.add_metric([days], count)
    yield windows
    yield GaugeMetricFamily(
        "certfleet_certificate_expiration_leaves_listed",
        "Active leaf certificates listed one by one above (the rest are only counted)",
        value=listed,
    )


def counts_by(
    session: Session,
    name: str,
    documentation: str,
    column: InstrumentedAttribute[str],
    statuses: Sequence[str],
    query: Any,
) -> Metric:
    """Rows by status (`query` selects the status and a count, scoped), every known status
    present (0 when none)."""
    rows = session.execute(query.group_by(column))
    found: dict[str, int] = {status: count for status, count in rows}
    family = GaugeMetricFamily(name, documentation, labels=["status"])
    for status in statuses:
        family.add_metric([status], found.get(status, 0))
    return family


def deliveries(session: Session, who: Principal) -> Metric:
    found = {
        (kind, status): count
        for kind, status, count in session.execute(
            access.scope(
                select(Delivery.kind, Delivery.status, func.count())
                .join(Host, Host.id == Delivery.host_id)
                .group_by(Delivery.kind, Delivery.status),
                Host.site_id,
                who,
            )
        )
    }
    family = GaugeMetricFamily(
        "certfleet_deliveries", "Deliveries by kind and status", labels=["kind", "status"]
    )
    for kind in DELIVERY_KINDS:
        for status in DELIVERY_STATUSES:
            family.add_metric([kind, status], found.get((kind, status), 0))
    return family


def probes(session: Session, who: Principal) -> Metric:
    """What the hosts' TLS endpoints present, for the deliveries of certificates still in
    use: `mismatch` is a certificate renewed but not bound."""
    found = dict.fromkeys(PROBE_STATES, 0)
    rows = session.execute(
        access.scope(
            select(Delivery.probe_state, func.count())
            .join(Certificate, Delivery.certificate_id == Certificate.id)
            .join(Host, Host.id == Delivery.host_id)
            .where(Delivery.kind == "certificate", Certificate.status == "active")
            .group_by(Delivery.probe_state),
            Host.site_id,
            who,
        )
    )
    for state, count in rows:
        found[state] = count
    family = GaugeMetricFamily(
        "certfleet_certificate_probes",
        "Deliveries of active certificates by what the host presents (mismatch: renewed"
        " but not bound; unreachable; match; none: nothing to probe; unprobed: not yet)",
        labels=["state"],
    )
    for state, count in found.items():
        family.add_metric([state], count)
    return family


def queue_depths(client: redis.Redis) -> Metric:
    """Messages waiting in each queue (not those a worker holds). Without Redis the family
    is empty, and the scrape still answers from the database."""
    family = GaugeMetricFamily(
        "certfleet_queue_depth", "Messages waiting in a queue", labels=["queue"]
    )
    try:
        with client.pipeline(transaction=False) as pipe:
            for queue in QUEUES:
                for suffix in PRIORITY_SUFFIXES:
                    pipe.llen(queue + suffix)
            lengths = pipe.execute()
    except redis.exceptions.RedisError:
        return family
    steps = len(PRIORITY_SUFFIXES)
    for index, queue in enumerate(QUEUES):
        family.add_metric([queue], sum(lengths[index * steps : (index + 1) * steps]))
    return family


def task_metrics(session: Session) -> Iterable[Metric]:
    """Runs, durations and last success and failure of every task that ever ran."""
    runs = session.scalars(select(TaskRun).order_by(TaskRun.task)).all()
    buckets: dict[str, dict[str, int]] = defaultdict(dict)
    for task, le, count in session.execute(
        select(TaskDuration.task, TaskDuration.le, TaskDuration.count)
    ):
        buckets[task][le] = count
    total = CounterMetricFamily(
        "certfleet_task_runs", "Task runs by outcome", labels=["task", "outcome"]
    )
    durations = HistogramMetricFamily(
        "certfleet_task_duration_seconds", "How long task runs take", labels=["task"]
    )
    last_success = GaugeMetricFamily(
        "certfleet_task_last_success_timestamp_seconds",
        "When a task last succeeded (Unix time); for the periodic tasks (sweep, renew, notify,"
        " campaigns, CRLs) a stale value means the beat or its workers are down",
        labels=["task"],
    )
    last_failure = GaugeMetricFamily(
        "certfleet_task_last_failure_timestamp_seconds",
        "When a task last failed for good (Unix time)",
        labels=["task"],
    )
    labels = [*(le_label(b) for b in DURATION_BUCKETS), "+Inf"]
    for run in runs:
        total.add_metric([run.task, "success"], run.successes)
        total.add_metric([run.task, "retry"], run.retries)
        total.add_metric([run.task, "failure"], run.failures)
        counts = accumulate(buckets[run.task].get(le, 0) for le in labels)
        durations.add_metric(
            [run.task], list(zip(labels, counts, strict=True)), sum_value=run.seconds_total
        )
        if run.last_success_at is not None:
            last_success.add_metric([run.task], run.last_success_at.timestamp())
        if run.last_failure_at is not None:
            last_failure.add_metric([run.task], run.last_failure_at.timestamp())
    return [total, durations, last_success, last_failure]
