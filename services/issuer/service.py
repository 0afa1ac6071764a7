"""Issuance: claim queued requests by ID, sign them, store the certificates.

Work is done in three steps so that a slow signature never holds a database write lock:
1. claim: one conditional UPDATE moves `queued -> signing` and commits; rows another worker
   claimed are skipped, so a redelivered message never issues twice;
2. sign: read the claimed rows and build every certificate in memory;
3. store: one transaction writes certificates, supersedes the hosts' previous ones, marks
   the requests `issued` or `failed` with a readable reason, and records Events.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy.exc
from cryptography import x509
from sqlalchemy import insert, select, tuple_, update
from sqlalchemy.orm import Session, joinedload

from shared import crls, deliveries, events
from shared.authorities import generate_material, load_signer
from shared.clock import Clock
from shared.db.models import Authority, Certificate, Host, IssuanceRequest, Site
from shared.db.session import Database
from shared.errors import CertfleetError, Conflict
from shared.issuance import check_csr_for_host, site_policy, subject_names
from shared.logging import fields
from shared.pki.ca import IssuedCa
from shared.pki.export import fingerprint_sha256, serial_hex, to_pem
from shared.pki.keys import decrypt_private_key, encrypt_private_key, generate_rsa_key
from shared.pki.profiles import DEFAULT_CRL, XPROTECT_SERVER, CrlProfile, ServerProfile
from shared.pki.signing import sign_server_certificate
from shared.renewal import renewal_due_at

log = logging.getLogger(__name__)
ACTOR = "issuer"

# Errors that say "try again later", not "this request is bad".
TRANSIENT: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
)


@dataclass(frozen=True)
class Secrets:
    """Secrets the issuer holds in memory only; repr() shows nothing."""

    ca_passphrase: str | None = field(default=None, repr=False)
    data_key: str | None = field(default=None, repr=False)


@dataclass
class SignerCache:
    """Decrypted CA keys, one per authority and certificate, kept for the process's life."""

    _signers: dict[tuple[int, str], IssuedCa] = field(default_factory=dict)

    def get(self, authority: Authority, passphrase: str | None) -> IssuedCa:
        cache_key = (authority.id, authority.fingerprint or "")
        signer = self._signers.get(cache_key)
        if signer is None or authority.status not in ("active", "retiring"):
            if passphrase is None:
                raise CertfleetError("CERTFLEET_CA_KEY_PASSPHRASE is not set on the issuer")
            signer = load_signer(authority, passphrase)
            self._signers[cache_key] = signer
        return signer


@dataclass(frozen=True)
class Signed:
    """A signed request: what the store step writes, so it reads nothing back."""

    request_id: int
    host_id: int
    site_id: int
    certificate: x509.Certificate
    row: dict[str, Any] = field(repr=False)  # the certificates row, but created_at
    delivered: bool = False  # the host has a delivery method: the distributor has work


@dataclass(frozen=True)
class Failed:
    request_id: int
    host_id: int
    site_id: int
    reason: str


@dataclass(frozen=True)
class BatchResult:
    issued: list[int]
    failed: list[int]
    skipped: list[int]
    certificate_ids: list[int] = field(default_factory=list)
    to_distribute: list[int] = field(default_factory=list)  # of hosts with a delivery method


def claim(session: Session, request_ids: Sequence[int], now: dt.datetime) -> dict[int, int]:
    """Move the given queued requests to `signing`; return the IDs this caller now owns, each
    with its fencing token (the attempt number the claim gave it)."""
    result = session.execute(
        update(IssuanceRequest)
        .where(IssuanceRequest.id.in_(list(request_ids)), IssuanceRequest.status == "queued")
        .values(status="signing", attempts=IssuanceRequest.attempts + 1, updated_at=now)
        .returning(IssuanceRequest.id, IssuanceRequest.attempts)
    )
    return dict(sorted((row[0], row[1]) for row in result))


def still_owned(session: Session, tokens: Mapping[int, int], now: dt.datetime) -> set[int]:
    """Which claims are still ours, locked until the caller commits. A claim the sweep took
    back from a worker it thought dead, and that another worker claimed again, has a newer
    attempt number: the slow worker's results are dropped, so a request is never issued
    twice."""
    if not tokens:
        return set()
    result = session.execute(
        update(IssuanceRequest)
        .where(
            tuple_(IssuanceRequest.id, IssuanceRequest.attempts).in_(list(tokens.items())),
            IssuanceRequest.status == "signing",
        )
        .values(updated_at=now)
        .returning(IssuanceRequest.id)
    )
    return {row[0] for row in result}


def release(session: Session, tokens: Mapping[int, int], now: dt.datetime) -> None:
    """Give claimed rows back to the queue after a transient failure (only those still ours)."""
    if not tokens:
        return
    session.execute(
        update(IssuanceRequest)
        .where(
            tuple_(IssuanceRequest.id, IssuanceRequest.attempts).in_(list(tokens.items())),
            IssuanceRequest.status == "signing",
        )
        .values(status="queued", updated_at=now)
    )


def give_up(db: Database, request_ids: Sequence[int], reason: str, clock: Clock) -> None:
    """Mark still-unfinished requests failed once retries are exhausted."""
    with db.session() as session:
        session.execute(
            update(IssuanceRequest)
            .where(
                IssuanceRequest.id.in_(list(request_ids)),
                IssuanceRequest.status.in_(("queued", "signing")),
            )
            .values(status="failed", reason=reason, updated_at=clock.now())
        )


def sign_request(
    request: IssuanceRequest,
    signers: SignerCache,
    secrets: Secrets,
    now: dt.datetime,
    profile: ServerProfile = XPROTECT_SERVER,
) -> Signed:
    host = request.host
    names = subject_names(host)
    site_policy(host.site).enforce(names.dns_names, names.ip_addresses)
    sealed: bytes | None = None
    if request.csr_pem:
        public_key = check_csr_for_host(host, request.csr_pem, profile)
    else:
        if not secrets.data_key:
            raise CertfleetError("CERTFLEET_DATA_KEY is not set; cannot hold a server-side key")
        key = generate_rsa_key(profile.server_key_bits)
        sealed = encrypt_private_key(key, secrets.data_key)
        public_key = key.public_key()
    signer = signers.get(host.site.authority, secrets.ca_passphrase)
    certificate = sign_server_certificate(
        public_key, names, signer, now=now, validity_days=request.validity_days, profile=profile
    )
    return Signed(
        request.id,
        host.id,
        host.site_id,
        certificate,
        _certificate_row(request, certificate, sealed),
        delivered=deliveries.has_method(host.delivery),
    )


def store(session: Session, outcomes: Sequence[Signed | Failed], now: dt.datetime) -> list[int]:
    """Write the batch's results (of claims still_owned); return the new certificates' IDs.

    Nothing is read back but the hosts' active certificates: the signing step carried what
    is written. A fixed number of statements whatever the batch size: multi-row INSERTs of
    the certificates and the Events, one UPDATE of the issued requests, and executemany
    UPDATEs of the superseded certificates and any failed requests."""
    signed = [o for o in outcomes if isinstance(o, Signed)]
    # Supersede in request order: the host's active certificate by the batch's first new one
    # for it, and that one by the next, so two requests for one host in a batch leave one
    # active certificate and an unbroken chain.
    active = _active_certificate_ids(session, {o.host_id for o in signed})
    certificate_ids = _insert_certificates(session, [{**o.row, "created_at": now} for o in signed])
    superseded: list[dict[str, Any]] = []
    audit: list[dict[str, Any]] = []
    for outcome, certificate_id in zip(signed, certificate_ids, strict=True):
        previous = active.get(outcome.host_id, [])
        superseded += [
            {
                "id": old,
                "status": "superseded",
                "superseded_at": now,
                "superseded_by_id": certificate_id,
            }
            for old in previous
        ]
        active[outcome.host_id] = [certificate_id]
        audit.append(
            events.entry(
                "certificate.issued",
                ACTOR,
                at=now,
                site_id=outcome.site_id,
                host_id=outcome.host_id,
                subject=("certificate", certificate_id),
                serial=outcome.row["serial"],
                fingerprint=outcome.row["fingerprint"],
                not_after=outcome.row["not_after"].isoformat(),
                superseded=previous,
            )
        )
    failed = [o for o in outcomes if isinstance(o, Failed)]
    for failure in failed:
        audit.append(
            events.entry(
                "issuance.failed",
                ACTOR,
                at=now,
                site_id=failure.site_id,
                host_id=failure.host_id,
                subject=("issuance_request", failure.request_id),
                reason=failure.reason,
            )
        )
    if superseded:
        session.execute(update(Certificate), superseded)
    if certificate_ids:
        # Each request gets its certificate by the certificate's request_id: one statement.
        session.execute(
            update(IssuanceRequest)
            .where(
                IssuanceRequest.id == Certificate.request_id,
                Certificate.id.in_(certificate_ids),
            )
            .values(status="issued", certificate_id=Certificate.id, reason=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    if failed:
        session.execute(
            update(IssuanceRequest),
            [
                {"id": f.request_id, "status": "failed", "reason": f.reason, "updated_at": now}
                for f in failed
            ],
        )
    events.record_all(session, audit)
    return certificate_ids


def _active_certificate_ids(session: Session, host_ids: set[int]) -> dict[int, list[int]]:
    """The active certificates of these hosts, by host, oldest first."""
    active: dict[int, list[int]] = {}
    if not host_ids:
        return active
    rows = session.execute(
        select(Certificate.host_id, Certificate.id)
        .where(Certificate.host_id.in_(sorted(host_ids)), Certificate.status == "active")
        .order_by(Certificate.id)
    )
    for host_id, certificate_id in rows.all():
        active.setdefault(host_id, []).append(certificate_id)
    return active


def _insert_certificates(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert the signed certificates (not yet superseding anything); their IDs in order."""
    if not rows:
        return []
    result = session.execute(
        insert(Certificate).returning(Certificate.id, sort_by_parameter_order=True),
        list(rows),
    )
    return [row[0] for row in result.all()]


def _certificate_row(
    request: IssuanceRequest, cert: x509.Certificate, sealed_key: bytes | None
) -> dict[str, Any]:
    host = request.host
    serial = serial_hex(cert)
    return {
        "authority_id": host.site.authority_id,
        "host_id": request.host_id,
        "request_id": request.id,
        "serial": serial,
        "fingerprint": fingerprint_sha256(cert),
        "common_name": cert.subject.rfc4514_string().removeprefix("CN="),
        "dns_names": list(host.dns_names),
        "ip_addresses": list(host.ip_addresses),
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "renewal_due_at": renewal_due_at(
            cert.not_valid_before_utc,
            cert.not_valid_after_utc,
            host.site.renew_at_fraction,
            jitter_seed=serial,
        ),
        "renewal_attempts": 0,
        "status": "active",
        "certificate_pem": to_pem(cert).decode(),
        "encrypted_key": sealed_key,
        "key_source": "server" if sealed_key else "csr",
    }


def issue_batch(
    db: Database,
    request_ids: Sequence[int],
    *,
    signers: SignerCache,
    secrets: Secrets,
    clock: Clock,
) -> BatchResult:
    """Issue what can be claimed of `request_ids`. Raises only transient errors, after
    handing the claimed rows back to the queue."""
    with db.session() as session:
        claimed = claim(session, request_ids, clock.now())
        requests = _load_claimed(session, list(claimed))
    # Committed: the claims are visible to the sweep, and no lock is held while signing.
    skipped = sorted(set(request_ids) - set(claimed))
    if not claimed:
        return _done(BatchResult([], [], skipped))
    try:
        outcomes = _sign_claimed(requests, signers, secrets, clock.now())
        with db.session() as session:
            owned = still_owned(session, claimed, clock.now())
            outcomes = [o for o in outcomes if o.request_id in owned]
            certificate_ids = store(session, outcomes, clock.now())
    except Exception:
        with db.session() as session:
            release(session, claimed, clock.now())
        raise
    lost = sorted(set(claimed) - owned)
    if lost:
        log.warning("claims taken over by another worker", extra=fields(request_ids=lost))
        skipped = sorted([*skipped, *lost])
    signed = [o for o in outcomes if isinstance(o, Signed)]
    failed = [o.request_id for o in outcomes if isinstance(o, Failed)]
    to_distribute = [c for o, c in zip(signed, certificate_ids, strict=True) if o.delivered]
    issued = [o.request_id for o in signed]
    return _done(BatchResult(issued, failed, skipped, certificate_ids, to_distribute))


def _done(result: BatchResult) -> BatchResult:
    """Log a batch's outcome (also when another worker had claimed all of it) and return it."""
    counts = {k: len(getattr(result, k)) for k in ("issued", "failed", "skipped")}
    log.info("batch done", extra=fields(**counts))
    return result


def _load_claimed(session: Session, claimed: Sequence[int]) -> Sequence[IssuanceRequest]:
    """The claimed requests with everything signing reads, so that it runs detached from any
    session: hosts joined; sites and their authority, sealed key included, loaded once each
    rather than repeated on every request's row."""
    if not claimed:
        return []
    return session.scalars(
        select(IssuanceRequest)
        .options(
            joinedload(IssuanceRequest.host)
            .selectinload(Host.site)
            .joinedload(Site.authority)
            .undefer(Authority.encrypted_key)
        )
        .where(IssuanceRequest.id.in_(claimed))
        .order_by(IssuanceRequest.id)
    ).all()


def _sign_claimed(
    requests: Sequence[IssuanceRequest], signers: SignerCache, secrets: Secrets, now: dt.datetime
) -> list[Signed | Failed]:
    outcomes: list[Signed | Failed] = []
    for request in requests:
        try:
            outcomes.append(sign_request(request, signers, secrets, now))
        except CertfleetError as exc:
            outcomes.append(Failed(request.id, request.host_id, request.host.site_id, exc.message))
        except Exception:
            # One request that cannot be signed (a corrupt stored CSR or CA certificate) must
            # not fail the other requests of its batch.
            log.exception("signing failed", extra=fields(request_id=request.id))
            reason = "internal error while signing; see issuer logs"
            outcomes.append(Failed(request.id, request.host_id, request.host.site_id, reason))
    return outcomes


def create_authority(
    db: Database,
    authority_id: int,
    *,
    secrets: Secrets,
    clock: Clock,
    crl_profile: CrlProfile = DEFAULT_CRL,
) -> str:
    """Generate a pending authority's key and certificate, and sign its first CRL. Returns
    its final status."""
    with db.session() as session:
        claimed = session.execute(
            update(Authority)
            .where(Authority.id == authority_id, Authority.status == "pending")
            .values(status="generating", updated_at=clock.now())
            .returning(Authority.id)
        ).first()
    if claimed is None:
        return "skipped"
    try:
        return _generate_claimed_authority(db, authority_id, secrets, clock, crl_profile)
    except Exception:
        # Hand the row back, as release() does for requests: left in `generating`, it could
        # never be claimed by the task's retry.
        with db.session() as session:
            session.execute(
                update(Authority)
                .where(Authority.id == authority_id, Authority.status == "generating")
                .values(status="pending", updated_at=clock.now())
            )
        raise


def fail_authority(db: Database, authority_id: int, reason: str, clock: Clock) -> None:
    """Give up on an authority that cannot be made: a terminal state with a reason."""
    with db.session() as session:
        session.execute(
            update(Authority)
            .where(Authority.id == authority_id, Authority.status.in_(("pending", "generating")))
            .values(status="failed", reason=reason, updated_at=clock.now())
        )
        events.record(
            session,
            "authority.failed",
            ACTOR,
            at=clock.now(),
            subject=("authority", authority_id),
            reason=reason,
        )


def _generate_claimed_authority(
    db: Database, authority_id: int, secrets: Secrets, clock: Clock, crl_profile: CrlProfile
) -> str:
    with db.session() as session:
        authority = session.get(Authority, authority_id)
        assert authority is not None
        try:
            if secrets.ca_passphrase is None:
                raise CertfleetError("CERTFLEET_CA_KEY_PASSPHRASE is not set on the issuer")
            generate_material(
                session,
                authority,
                passphrase=secrets.ca_passphrase,
                now=clock.now(),
                crl_profile=crl_profile,
            )
        except CertfleetError as exc:
            authority.status, authority.reason = "failed", exc.message
        authority.updated_at = clock.now()
        events.record(
            session,
            f"authority.{'created' if authority.status == 'active' else 'failed'}",
            ACTOR,
            at=clock.now(),
            subject=("authority", authority.id),
            name=authority.name,
            reason=authority.reason,
        )
        return authority.status


def client_host_ids(db: Database) -> list[int]:
    """Every client host: they need the trust bundle again when an authority is added."""
    with db.session() as session:
        return deliveries.client_host_ids(session)


# A CRL is replaced by compare-and-set on its number; a worker that keeps losing to others
# gives up after this many tries (each loss means someone else published a fresh one).
CRL_ATTEMPTS = 5


def publish_crl(
    db: Database,
    authority_id: int,
    signers: SignerCache,
    secrets: Secrets,
    clock: Clock,
    profile: CrlProfile = DEFAULT_CRL,
) -> int | None:
    """Sign and store the authority's next CRL; return its CRL Number, or None when the
    authority cannot sign (unknown, not yet made, retired). Only the issuer runs this: it is
    the one process that decrypts CA keys."""
    for _attempt in range(CRL_ATTEMPTS):
        with db.session() as session:
            authority = session.get(Authority, authority_id)
            if (
                authority is None
                or authority.status not in crls.SIGNING_STATUSES
                or authority.certificate_pem is None
            ):
                return None
            signer = signers.get(authority, secrets.ca_passphrase)
            number = crls.store_next_crl(
                session, authority, signer, now=clock.now(), profile=profile
            )
        if number is not None:
            log.info("crl published", extra=fields(authority_id=authority_id, number=number))
            return number
    raise Conflict(f"the CRL of authority {authority_id} kept changing under this worker")


def refresh_due_crls(
    db: Database,
    signers: SignerCache,
    secrets: Secrets,
    clock: Clock,
    profile: CrlProfile = DEFAULT_CRL,
) -> list[int]:
    """Publish a CRL for every authority that needs one (none yet, half its validity gone, or
    older than a revocation); for a periodic beat. Returns the authorities refreshed; one
    that cannot sign is logged and does not stop the others."""
    with db.session() as session:
        due = crls.due_authority_ids(session, clock.now(), profile)
    refreshed: list[int] = []
    for authority_id in due:
        try:
            number = publish_crl(db, authority_id, signers, secrets, clock, profile)
        except CertfleetError as exc:
            log.warning(
                "crl not published", extra=fields(authority_id=authority_id, error=exc.message)
            )
            continue
        if number is not None:
            refreshed.append(authority_id)
    return refreshed


def crl_failed(db: Database, authority_id: int, reason: str, clock: Clock) -> None:
    """Record that publishing a CRL failed for good (the beat will try again later)."""
    with db.session() as session:
        events.record(
            session,
            "crl.failed",
            ACTOR,
            at=clock.now(),
            subject=("authority", authority_id),
            reason=reason,
        )


def secret_problems(db: Database, secrets: Secrets) -> list[str]:
    """What this issuer cannot do for lack of a secret, for `certfleet doctor`: open each
    authority's key (the CA passphrase), and make or read server-held host keys (the data
    key). Names what is missing or wrong and how to fix it; never a value."""
    problems: list[str] = []
    with db.session() as session:
        authorities = session.scalars(
            select(Authority).where(Authority.status.in_(crls.SIGNING_STATUSES))
        ).all()
        if secrets.ca_passphrase is None:
            problems.append(
                "CERTFLEET_CA_KEY_PASSPHRASE is not set on the issuer: nothing can be signed"
                " (set it, or run the stack with `certfleet stack run`, which reads"
                " var/secrets.env)"
            )
        else:
            for authority in authorities:
                try:
                    load_signer(authority, secrets.ca_passphrase)
                except CertfleetError:
                    problems.append(
                        f"the issuer cannot open the key of authority {authority.name!r}:"
                        " CERTFLEET_CA_KEY_PASSPHRASE is not the one it was made with"
                    )
        if secrets.data_key is None:
            problems.append(
                "CERTFLEET_DATA_KEY is not set on the issuer: every request without a CSR"
                " (a key held by certfleet) fails"
            )
        else:
            sealed = session.scalar(
                select(Certificate.encrypted_key)
                .where(Certificate.encrypted_key.is_not(None))
                .order_by(Certificate.id.desc())
                .limit(1)
            )
            if sealed is not None:
                try:
                    decrypt_private_key(sealed, secrets.data_key)
                except CertfleetError:
                    problems.append(
                        "CERTFLEET_DATA_KEY is not the key the stored host keys were sealed"
                        " with: their PFX exports and deliveries fail"
                    )
    return problems
