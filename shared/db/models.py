"""The database schema: the source of truth for every service.

Status values are plain strings checked by the code that moves them; the constants below
are the whole vocabulary.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.db.types import UTCDateTime, utcnow


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


AUTHORITY_STATUSES = ("pending", "generating", "active", "retiring", "retired", "failed")
AUTHORITY_KINDS = ("root", "intermediate")
REQUEST_STATUSES = ("queued", "signing", "issued", "failed")
CERTIFICATE_STATUSES = ("active", "superseded", "revoked", "expired")
TOKEN_ROLES = ("admin", "operator", "auditor")
AGENT_ROLE = "agent"  # host-scoped; reaches only /api/v1/agent/*
DELIVERY_STATUSES = ("pending", "delivered", "installed", "verified", "failed")
DELIVERY_KINDS = ("certificate", "trust")
# "none": the host has no TLS endpoint to probe, so there is no verdict to wait for.
PROBE_STATES = ("unprobed", "none", "match", "mismatch", "unreachable")
HOST_ROLES = ("management", "recording", "failover", "mobile", "event", "client", "other")
PLATFORMS = ("windows", "linux")
DELIVERY_METHODS = ("none", "directory", "ssh", "webhook", "agent")


class Authority(Base):
    __tablename__ = "authorities"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("authorities.id"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    key_bits: Mapped[int] = mapped_column(Integer)
    validity_days: Mapped[int] = mapped_column(Integer)
    certificate_pem: Mapped[str | None] = mapped_column(Text)
    encrypted_key: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    serial: Mapped[str | None] = mapped_column(String(64))
    fingerprint: Mapped[str | None] = mapped_column(String(64), unique=True)
    not_before: Mapped[dt.datetime | None]
    not_after: Mapped[dt.datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    parent: Mapped[Authority | None] = relationship(remote_side=[id])


class AuthorityCrl(Base):
    """An authority's current CRL (DER), signed by the issuer and served by the API.

    `number` is the CRL Number of `der` and the counter the next CRL continues from; it is only
    ever replaced by a compare-and-set on its previous value. `revoked_count` is how many of
    the authority's certificates were revoked when `der` was built: more now means a newer
    revocation is missing from it (revocation is final, so the count never drops)."""

    __tablename__ = "authority_crls"

    authority_id: Mapped[int] = mapped_column(ForeignKey("authorities.id"), primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger)
    der: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    this_update: Mapped[dt.datetime]
    next_update: Mapped[dt.datetime]
    revoked_count: Mapped[int] = mapped_column(Integer, default=0)
    entries: Mapped[int] = mapped_column(Integer, default=0)


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    authority_id: Mapped[int] = mapped_column(ForeignKey("authorities.id"))
    dns_suffixes: Mapped[list[Any]] = mapped_column(default=list)
    ip_ranges: Mapped[list[Any]] = mapped_column(default=list)
    allow_short_names: Mapped[bool] = mapped_column(Boolean, default=True)
    maintenance_window: Mapped[dict[str, Any] | None]
    renew_at_fraction: Mapped[float] = mapped_column(Float, default=1 / 3)
    default_validity_days: Mapped[int] = mapped_column(Integer, default=397)
    # No expiry notices for this site until then (e.g. a site being retired).
    muted_until: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    authority: Mapped[Authority] = relationship()


class Host(Base):
    __tablename__ = "hosts"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    dns_names: Mapped[list[Any]] = mapped_column(default=list)
    ip_addresses: Mapped[list[Any]] = mapped_column(default=list)
    roles: Mapped[list[Any]] = mapped_column(default=list)
    failover_for: Mapped[list[Any]] = mapped_column(default=list)
    platform: Mapped[str] = mapped_column(String(16), default="windows")
    service_account: Mapped[str | None] = mapped_column(String(200))
    delivery: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # A directory target's directory for this host (shared.delivery_settings): one host's.
    delivery_directory: Mapped[str | None] = mapped_column(String(1100), unique=True)
    tls_endpoints: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    site: Mapped[Site] = relationship()


class HostName(Base):
    """Who owns each DNS name and IP address: one host, fleet-wide, so that no site's operator
    can register (and get certificates for) another site's names. A name in SharedName is
    exempt and not listed here."""

    __tablename__ = "host_names"

    name: Mapped[str] = mapped_column(String(253), primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)


class SharedName(Base):
    """A name an admin allows several hosts to carry (a cluster or load-balancer name)."""

    __tablename__ = "shared_names"

    name: Mapped[str] = mapped_column(String(253), primary_key=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class IssuanceRequest(Base):
    __tablename__ = "issuance_requests"
    __table_args__ = (Index("ix_issuance_requests_status_updated", "status", "updated_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"), index=True)
    csr_pem: Mapped[str | None] = mapped_column(Text)
    validity_days: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    reason: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    campaign_id: Mapped[int | None] = mapped_column(Integer, index=True)
    certificate_id: Mapped[int | None] = mapped_column(ForeignKey("certificates.id"))
    requested_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    host: Mapped[Host] = relationship()


class Certificate(Base):
    __tablename__ = "certificates"
    __table_args__ = (
        UniqueConstraint("authority_id", "serial"),
        Index("ix_certificates_status_not_after", "status", "not_after"),
        Index("ix_certificates_host_status", "host_id", "status"),
        # The renewal scan walks active certificates in due order; with renewal_due_at
        # alone it would step over every superseded generation first.
        Index("ix_certificates_status_renewal_due", "status", "renewal_due_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    authority_id: Mapped[int] = mapped_column(ForeignKey("authorities.id"))
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"))
    request_id: Mapped[int | None] = mapped_column(Integer)
    serial: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    common_name: Mapped[str] = mapped_column(String(255))
    dns_names: Mapped[list[Any]] = mapped_column(default=list)
    ip_addresses: Mapped[list[Any]] = mapped_column(default=list)
    not_before: Mapped[dt.datetime]
    not_after: Mapped[dt.datetime]
    status: Mapped[str] = mapped_column(String(16), default="active")
    certificate_pem: Mapped[str] = mapped_column(Text)
    encrypted_key: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    key_source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    superseded_at: Mapped[dt.datetime | None]
    superseded_by_id: Mapped[int | None] = mapped_column(Integer)
    revoked_at: Mapped[dt.datetime | None]
    revocation_reason: Mapped[str | None] = mapped_column(String(64))
    # Renewal: when it is due (set at issuance, with jitter), its attempts, and when to try
    # again after a failure (hours, not a whole period).
    renewal_due_at: Mapped[dt.datetime | None]
    renewal_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_renewal_at: Mapped[dt.datetime | None]
    renewal_request_id: Mapped[int | None] = mapped_column(Integer)

    host: Mapped[Host] = relationship()
    authority: Mapped[Authority] = relationship()


class Event(Base):
    """Append-only audit trail.

    Read newest first by ID, so each filter's index ends in `id`: one backward range scan
    answers a page on PostgreSQL as on SQLite (whose indexes end in the rowid anyway)."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_kind_id", "kind", "id"),
        Index("ix_events_site_id_id", "site_id", "id"),
        Index("ix_events_host_id_id", "host_id", "id"),
        Index("ix_events_subject_id", "subject_type", "subject_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(200))
    site_id: Mapped[int | None] = mapped_column(Integer)
    host_id: Mapped[int | None] = mapped_column(Integer)
    subject_type: Mapped[str | None] = mapped_column(String(32))
    subject_id: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class TaskRun(Base):
    """How one Celery task has fared, over every worker process and machine (see
    shared.taskstats): runs by outcome, their total duration, the last success and failure."""

    __tablename__ = "task_runs"

    task: Mapped[str] = mapped_column(String(100), primary_key=True)
    successes: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    seconds_total: Mapped[float] = mapped_column(Float, default=0.0)
    last_success_at: Mapped[dt.datetime | None]
    last_failure_at: Mapped[dt.datetime | None]


class TaskDuration(Base):
    """A task's runs by duration bucket (`le`: the bucket's upper bound, or "+Inf"); each run
    counts in one bucket only, and the exporter adds them up into Prometheus' cumulative
    buckets."""

    __tablename__ = "task_durations"

    task: Mapped[str] = mapped_column(String(100), primary_key=True)
    le: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class ApiToken(Base):
    """Only the SHA-256 of the secret is stored; the secret is shown once at creation."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class Delivery(Base):
    """One certificate (or trust bundle) on its way to one host by one method.

    `probe_state` records what the host's TLS endpoints present after installation: `mismatch`
    on an installed delivery is the state "renewed but not bound"."""

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_host_status", "host_id", "status"),
        Index("ix_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_deliveries_certificate", "certificate_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"))
    kind: Mapped[str] = mapped_column(String(16))
    certificate_id: Mapped[int | None] = mapped_column(ForeignKey("certificates.id"))
    trust_fingerprint: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    claimed_until: Mapped[dt.datetime | None]
    next_attempt_at: Mapped[dt.datetime | None]
    probe_state: Mapped[str] = mapped_column(String(16), default="unprobed")
    presented_fingerprint: Mapped[str | None] = mapped_column(String(64))
    probe_attempts: Mapped[int] = mapped_column(Integer, default=0)
    delivered_at: Mapped[dt.datetime | None]
    installed_at: Mapped[dt.datetime | None]
    verified_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    host: Mapped[Host] = relationship()
    certificate: Mapped[Certificate | None] = relationship()


class AgentEnrollment(Base):
    """A one-time enrolment secret for a host's agent (stored hashed)."""

    __tablename__ = "agent_enrollments"

    id: Mapped[int] = mapped_column(primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


NOTIFICATION_KINDS = ("email", "webhook")
DEFAULT_THRESHOLDS = (30, 14, 7, 1, 0)


class NotificationChannel(Base):
    """Where notices go. `site_id` routes a channel to one site (None: every site);
    thresholds are days before expiry (0 = expired)."""

    __tablename__ = "notification_channels"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(Text)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    thresholds: Mapped[list[Any]] = mapped_column(default=lambda: list(DEFAULT_THRESHOLDS))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))
    muted_until: Mapped[dt.datetime | None]
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Notice(Base):
    """The ledger: one row per (subject, channel, notice) ever sent, so that each notice goes
    out exactly once however often the scan runs. `notice` is e.g. "expires_in_7d",
    "expired", "renewal_failed", "unbound", "ca_expires_before_leaves"."""

    __tablename__ = "notices"
    __table_args__ = (UniqueConstraint("subject_type", "subject_id", "channel_id", "notice"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[int] = mapped_column(Integer)
    channel_id: Mapped[int] = mapped_column(ForeignKey("notification_channels.id"))
    notice: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[dt.datetime | None]


CAMPAIGN_KINDS = ("renew", "rotate_authority")
# running -> paused <-> running; -> cancelled; -> completed or failed when nothing is left.
CAMPAIGN_STATUSES = ("running", "paused", "cancelled", "completed", "failed")
# A CA rotation moves through these in order and never skips one.
ROTATION_PHASES = ("create_authority", "trust", "reissue", "retire", "done")
CAMPAIGN_ITEM_STATUSES = (
    "pending",
    "queued",
    "issued",
    "delivered",
    "verified",
    "failed",
    "cancelled",
    "skipped",
)


class Campaign(Base):
    """A fleet renewal: which certificates (`selector`), how fast (`rate_per_minute`,
    `per_site_concurrency`), and where it stands. `finished_at` is None while anything is
    left to do or to watch. A CA rotation also has a `phase`, the new authority and the share
    of clients that must hold the new trust bundle before any leaf is re-issued."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(24))
    status: Mapped[str] = mapped_column(String(16), default="running")
    phase: Mapped[str | None] = mapped_column(String(24))
    selector: Mapped[dict[str, Any]] = mapped_column(default=dict)
    rate_per_minute: Mapped[int | None] = mapped_column(Integer)  # None: unthrottled
    per_site_concurrency: Mapped[int] = mapped_column(Integer)
    respect_windows: Mapped[bool] = mapped_column(Boolean, default=True)
    max_failures: Mapped[int] = mapped_column(Integer)
    authority_id: Mapped[int | None] = mapped_column(ForeignKey("authorities.id"))
    new_authority_id: Mapped[int | None] = mapped_column(ForeignKey("authorities.id"))
    ack_share: Mapped[float] = mapped_column(Float, default=1.0)
    trust_fingerprint: Mapped[str | None] = mapped_column(String(64))
    # The one site a campaign is confined to (its selector names exactly that site): the
    # only campaigns an operator or auditor scoped to that site sees. None: several or all.
    site_id: Mapped[int | None] = mapped_column(Integer, index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(index=True)


class CampaignItem(Base):
    """One certificate a campaign renews. `finished_at` is set once nothing more will happen
    to it: verified, failed, cancelled, skipped, or as far as its host lets certfleet see
    (issued for a host without a delivery method, delivered for one without endpoints)."""

    __tablename__ = "campaign_items"
    __table_args__ = (
        UniqueConstraint("campaign_id", "certificate_id"),
        Index("ix_campaign_items_campaign_status", "campaign_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id"))
    host_id: Mapped[int] = mapped_column(ForeignKey("hosts.id"))
    site_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    request_id: Mapped[int | None] = mapped_column(Integer)
    new_certificate_id: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    certificate: Mapped[Certificate] = relationship()
    host: Mapped[Host] = relationship()
