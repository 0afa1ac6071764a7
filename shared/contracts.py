"""The contract between services: queue names, task names and payload shapes.

Payloads are plain JSON with IDs only: never a key, a certificate body, a passphrase or an
ORM object. A sender builds a payload with one of the functions here; a receiver reads it
with the matching parser, so both ends agree in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

QUEUE_ISSUE = "issue"
QUEUE_DISTRIBUTE = "distribute"
QUEUE_EXPIRY = "expiry"

TASK_ISSUE_BATCH = "certfleet.issuer.issue_batch"
TASK_CREATE_AUTHORITY = "certfleet.issuer.create_authority"
TASK_PUBLISH_CRL = "certfleet.issuer.publish_crl"
TASK_REFRESH_CRLS = "certfleet.issuer.refresh_crls"
TASK_DISTRIBUTE_CERTIFICATES = "certfleet.distributor.distribute_certificates"
TASK_DISTRIBUTE_TRUST = "certfleet.distributor.distribute_trust"
TASK_DELIVER = "certfleet.distributor.deliver"
TASK_VERIFY = "certfleet.distributor.verify"
TASK_SWEEP = "certfleet.expiry.sweep"
TASK_RENEW = "certfleet.expiry.renew"
TASK_NOTIFY = "certfleet.expiry.notify"
TASK_ADVANCE_CAMPAIGNS = "certfleet.expiry.advance_campaigns"

# The beat that holds this Redis key schedules the periodic tasks; a standby waits for it.
BEAT_LOCK_KEY = "certfleet:expiry-watcher:beat"


@dataclass(frozen=True)
class Periodic:
    """A task the beat sends every `every` seconds to `queue`."""

    name: str
    task: str
    every: float
    queue: str


def periodic_tasks(sweep_interval_s: float) -> tuple[Periodic, ...]:
    return (
        Periodic("sweep", TASK_SWEEP, sweep_interval_s, QUEUE_EXPIRY),
        Periodic("renew", TASK_RENEW, 300.0, QUEUE_EXPIRY),
        Periodic("notify", TASK_NOTIFY, 300.0, QUEUE_EXPIRY),
        Periodic("campaigns", TASK_ADVANCE_CAMPAIGNS, 15.0, QUEUE_EXPIRY),
        # CRLs are signed by the issuer (the only holder of the CA passphrase).
        Periodic("crls", TASK_REFRESH_CRLS, 3600.0, QUEUE_ISSUE),
    )


MAX_IDS_PER_MESSAGE = 1000
# A server-side key costs an RSA-2048 keygen, some tens of CSR signatures: such requests go
# in smaller messages, so that a burst spreads over every issuer process instead of one
# (measured: messages of 10 cost about 5 % in per-message overhead over 2,000 keygens).
KEYGEN_IDS_PER_MESSAGE = 25


@dataclass(frozen=True)
class Message:
    task: str
    queue: str
    kwargs: dict[str, Any]


def _ids(values: Sequence[int]) -> list[int]:
    ids = [int(v) for v in values]
    if not ids or len(ids) > MAX_IDS_PER_MESSAGE:
        raise ValueError(f"a message carries 1 to {MAX_IDS_PER_MESSAGE} IDs, not {len(ids)}")
    return ids


def issue_batch(request_ids: Sequence[int]) -> Message:
    return Message(TASK_ISSUE_BATCH, QUEUE_ISSUE, {"request_ids": _ids(request_ids)})


def issue_batches(
    csr_ids: Sequence[int], keygen_ids: Sequence[int], batch_size: int
) -> list[Message]:
    """The issue messages for requests with a CSR (`batch_size` per message) and requests
    for a server-side key (KEYGEN_IDS_PER_MESSAGE per message)."""
    size = min(batch_size, KEYGEN_IDS_PER_MESSAGE)
    return [issue_batch(c) for c in chunked(csr_ids, batch_size)] + [
        issue_batch(c) for c in chunked(keygen_ids, size)
    ]


def create_authority(authority_id: int) -> Message:
    return Message(TASK_CREATE_AUTHORITY, QUEUE_ISSUE, {"authority_id": int(authority_id)})


def publish_crl(authority_id: int) -> Message:
    """Sign and store a fresh CRL for the authority (after a revocation)."""
    return Message(TASK_PUBLISH_CRL, QUEUE_ISSUE, {"authority_id": int(authority_id)})


def refresh_crls() -> Message:
    """Re-sign every CRL that is missing, half expired or older than a revocation (periodic)."""
    return Message(TASK_REFRESH_CRLS, QUEUE_ISSUE, {})


def distribute_certificates(certificate_ids: Sequence[int]) -> Message:
    """Newly issued certificates: plan and start their deliveries."""
    return Message(
        TASK_DISTRIBUTE_CERTIFICATES, QUEUE_DISTRIBUTE, {"certificate_ids": _ids(certificate_ids)}
    )


def distribute_trust(host_ids: Sequence[int]) -> Message:
    """Client hosts that must receive the current trust bundle."""
    return Message(TASK_DISTRIBUTE_TRUST, QUEUE_DISTRIBUTE, {"host_ids": _ids(host_ids)})


def deliver(delivery_id: int) -> Message:
    return Message(TASK_DELIVER, QUEUE_DISTRIBUTE, {"delivery_id": int(delivery_id)})


def verify(delivery_id: int) -> Message:
    """Probe the host's TLS endpoints for the delivered certificate."""
    return Message(TASK_VERIFY, QUEUE_DISTRIBUTE, {"delivery_id": int(delivery_id)})


def advance_campaigns() -> Message:
    """Move every unfinished campaign along now (the beat also does it periodically)."""
    return Message(TASK_ADVANCE_CAMPAIGNS, QUEUE_EXPIRY, {})


def chunked(ids: Sequence[int], size: int) -> list[list[int]]:
    size = max(1, min(size, MAX_IDS_PER_MESSAGE))
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]
