"""Renewal policy: when a certificate is due, when its site may be touched, how soon a failed
renewal is tried again, and which hosts may be renewed together.

Rebinding a certificate restarts the Milestone services on a host, so renewals belong in the
site's maintenance window and must never take a recording server and a failover server that
covers it down together; a failed renewal is retried within hours, not a whole period later.

Small, ordered, pure functions in the manner of a CA policy engine: no database, no clock, no
I/O. Every datetime must be timezone-aware (a naive one raises ValueError); results are UTC.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import zoneinfo
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

UTC = dt.UTC
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAYS = frozenset(range(7))
JITTER_SHARE = 0.05  # at most 5 % of the lifetime
RETRY_FIRST = dt.timedelta(hours=1)
RETRY_CAP = dt.timedelta(hours=12)
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d\Z")
_SECOND = dt.timedelta(seconds=1)


def _require_aware(name: str, value: dt.datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")


# --- when a certificate is due ------------------------------------------------------------


def renewal_due_at(
    not_before: dt.datetime,
    not_after: dt.datetime,
    renew_at_fraction: float,
    jitter_seed: str,
    max_jitter: dt.timedelta = dt.timedelta(days=1),
) -> dt.datetime:
    """The instant when `renew_at_fraction` of the lifetime remains, moved earlier by a jitter
    in [0, min(max_jitter, 5 % of the lifetime)] so that a fleet issued together does not
    renew in one burst. The jitter comes from SHA-256 of `jitter_seed` (the serial, say): the
    same certificate always gets the same due point. Never earlier than `not_before`."""
    _require_aware("not_before", not_before)
    _require_aware("not_after", not_after)
    if not 0 < renew_at_fraction < 1:
        raise ValueError(f"renew_at_fraction must be in (0, 1), got {renew_at_fraction!r}")
    if max_jitter < dt.timedelta(0):
        raise ValueError("max_jitter must not be negative")
    lifetime = not_after - not_before
    if lifetime <= dt.timedelta(0):
        raise ValueError("not_after must be later than not_before")
    nominal = not_after - lifetime * renew_at_fraction
    bound_us = min(max_jitter, lifetime * JITTER_SHARE) // dt.timedelta(microseconds=1)
    draw = int.from_bytes(hashlib.sha256(jitter_seed.encode()).digest()[:8], "big")
    jitter = dt.timedelta(microseconds=(draw * bound_us) >> 64)
    return max(nominal - jitter, not_before).astimezone(UTC)


def renewal_retry_delay(failed_attempts: int) -> dt.timedelta:
    """1 h, 2 h, 4 h, 8 h, then every 12 h: a failure never costs a whole renewal period."""
    if failed_attempts < 1:
        raise ValueError(f"failed_attempts must be at least 1, got {failed_attempts}")
    return min(RETRY_FIRST * (1 << min(failed_attempts - 1, 4)), RETRY_CAP)


# --- when a site may be touched -----------------------------------------------------------


def _local_to_utc(
    day: dt.date, at: dt.time, zone: zoneinfo.ZoneInfo, *, latest: bool
) -> dt.datetime:
    """The UTC instant of local wall time `at` on `day`. A time repeated by a fall-back gives
    its first instant, or its second when `latest`; a time skipped by a spring-forward gives
    the first instant after the gap (the transition itself)."""
    naive = dt.datetime.combine(day, at)
    both = [naive.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)]
    real = [u for u in both if u.astimezone(zone).replace(tzinfo=None) == naive]
    if real:
        return max(real) if latest else min(real)
    low, high = min(both), max(both)  # local time before the gap, and after it
    while high - low > _SECOND:
        middle = low + dt.timedelta(seconds=(high - low) // _SECOND // 2)
        if middle.astimezone(zone).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return high


def _parse_hhmm(name: str, value: object) -> dt.time:
    if value is None:
        raise ValueError(f"maintenance window {name} is missing (HH:MM)")
    if not isinstance(value, str) or not _HHMM.match(value):
        raise ValueError(f"maintenance window {name} must be HH:MM, got {value!r}")
    return dt.time(int(value[:2]), int(value[3:]))


def _parse_zone(value: object) -> zoneinfo.ZoneInfo:
    if value is None:
        raise ValueError("maintenance window timezone is missing (an IANA name)")
    if not isinstance(value, str):
        raise ValueError(f"maintenance window timezone must be a name, got {value!r}")
    try:
        return zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r}") from exc


def _parse_days(value: object) -> frozenset[int]:
    if value is None:
        return ALL_DAYS
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"maintenance window days must be a list, got {value!r}")
    unknown = [d for d in value if d not in WEEKDAYS]
    if unknown:
        raise ValueError(f"unknown day names {unknown!r}; use {', '.join(WEEKDAYS)}")
    if not value:
        raise ValueError("maintenance window days is empty: certificates would never renew")
    return frozenset(WEEKDAYS.index(d) for d in value)


class InvalidWindow(ValueError):
    """A maintenance window that does not parse: each failing field with why. The API's
    schema reports these as its field errors, so it refuses what the watcher could not read."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(self.errors.values()))


_WINDOW_FIELDS = (
    ("start", lambda value: _parse_hhmm("start", value)),
    ("end", lambda value: _parse_hhmm("end", value)),
    ("timezone", _parse_zone),
    ("days", _parse_days),
)


@dataclass(frozen=True)
class UnreadableWindow:
    """A stored window that does not parse: never open, with the reason to log."""

    error: str

    def is_open(self, now: dt.datetime) -> bool:
        return False


@dataclass(frozen=True)
class MaintenanceWindow:
    """A daily stretch of local wall-clock time, [start, end), on the listed weekdays.

    - `end` earlier than `start` crosses midnight; `days` names the day the window starts.
    - `start == end` is a 24-hour window from `start` on each listed day.
    - Spring-forward: a bound that falls in the skipped hour moves to the first valid local
      instant. A window lying wholly inside the skipped hour (02:00-03:00 in Europe) is empty
      that day and is skipped: renewals never run outside the stated wall-clock hours.
    - Fall-back: the window opens at the first occurrence of `start` and closes at the last
      occurrence of `end`, so the repeated hour lies inside it and it is never shortened.
    """

    start: dt.time
    end: dt.time
    timezone: zoneinfo.ZoneInfo
    days: frozenset[int] = field(default=ALL_DAYS)

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("start and end are local wall-clock times without tzinfo")
        if not self.days or not self.days <= ALL_DAYS:
            raise ValueError("days must be a non-empty set of weekday numbers 0 (Mon) to 6")

    @classmethod
    def from_json(cls, value: Mapping[str, object] | None) -> MaintenanceWindow | None:
        """Read a site's `maintenance_window`. None means "always open" and is returned as
        None; so is a 24-hour window on all seven days, which never closes."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise InvalidWindow({"_schema": f"maintenance window must be an object, got {value!r}"})
        parsed: dict[str, object] = {}
        errors: dict[str, str] = {}
        for name, parse in _WINDOW_FIELDS:
            try:
                parsed[name] = parse(value.get(name))
            except ValueError as exc:
                errors[name] = str(exc)
        if errors:
            raise InvalidWindow(errors)
        window = cls(**parsed)  # type: ignore[arg-type]
        return None if window.start == window.end and window.days == ALL_DAYS else window

    @classmethod
    def stored(
        cls, value: Mapping[str, object] | None
    ) -> MaintenanceWindow | UnreadableWindow | None:
        """A window as a site row holds it. One that no longer parses (stored before the API
        checked windows with this class) is closed rather than an error: that site's renewals
        wait, and every other site's go on."""
        try:
            return cls.from_json(value)
        except ValueError as exc:
            return UnreadableWindow(str(exc))

    def _occurrence(self, day: dt.date) -> tuple[dt.datetime, dt.datetime] | None:
        """[opens, closes) in UTC of the window starting on local `day`; None if none."""
        if day.weekday() not in self.days:
            return None
        opens = _local_to_utc(day, self.start, self.timezone, latest=False)
        end_day = day if self.end > self.start else day + dt.timedelta(days=1)
        closes = _local_to_utc(end_day, self.end, self.timezone, latest=True)
        return (opens, closes) if closes > opens else None

    def _occurrences(
        self, now: dt.datetime, days_ahead: int
    ) -> Iterator[tuple[dt.datetime, dt.datetime]]:
        # A window open now started today or, crossing midnight, yesterday (at most 25 h ago).
        today = now.astimezone(self.timezone).date()
        for offset in range(-1, days_ahead + 1):
            occurrence = self._occurrence(today + dt.timedelta(days=offset))
            if occurrence is not None:
                yield occurrence

    def is_open(self, now: dt.datetime) -> bool:
        _require_aware("now", now)
        return any(opens <= now < closes for opens, closes in self._occurrences(now, 0))

    def next_opening(self, now: dt.datetime) -> dt.datetime:
        """`now` (in UTC) if the window is open, else the instant it next opens."""
        _require_aware("now", now)
        if self.is_open(now):
            return now.astimezone(UTC)
        # 15 days: every listed weekday comes round twice, past a day emptied by DST.
        for opens, _closes in self._occurrences(now, 15):
            if opens > now:
                return opens
        raise AssertionError("a window with at least one day opens within two weeks")

    def closes_at(self, now: dt.datetime) -> dt.datetime:
        """When the open window closes, in UTC. Occurrences that touch (24-hour windows on
        consecutive days) count as one opening. ValueError if closed now or never closing."""
        _require_aware("now", now)
        occurrences = list(self._occurrences(now, 8))
        containing = [closes for opens, closes in occurrences if opens <= now < closes]
        if not containing:
            raise ValueError(f"the maintenance window is closed at {now.isoformat()}")
        closes_at = max(containing)
        for opens, closes in occurrences:
            if opens <= closes_at:
                closes_at = max(closes_at, closes)
        if occurrences[-1][0] <= closes_at:
            raise ValueError("the maintenance window never closes")
        return closes_at


# --- which hosts may be renewed together --------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A host whose certificate is due. `failover_for` names the recording servers this host
    covers; `covered_by` names the failover servers that cover this host (the caller fills it
    from the hosts whose `failover_for` names this one) so that a busy failover server that is
    not itself a candidate still holds its recording server back."""

    host_id: int
    host_name: str
    site_id: int
    roles: tuple[str, ...]
    failover_for: tuple[str, ...]
    due_at: dt.datetime
    covered_by: tuple[str, ...] = ()


def _key(name: str) -> str:
    return name.casefold()  # Windows host names are case-insensitive


def _partners(candidate: Candidate) -> set[str]:
    return {_key(n) for n in (*candidate.failover_for, *candidate.covered_by)}


def choose_batch(
    candidates: Sequence[Candidate],
    *,
    per_site_limit: int,
    busy_host_names: Collection[str] = (),
) -> list[Candidate]:
    """The next batch to renew, in order:

    1. most overdue first (due_at ascending, then host_id), whatever the input order;
    2. at most `per_site_limit` hosts per site;
    3. never a recording server together with a failover server that covers it;
    4. nothing that is busy, or whose partner is busy, being renewed by an earlier batch.

    A candidate held back waits for a later batch; the result is deterministic."""
    if per_site_limit < 1:
        raise ValueError(f"per_site_limit must be at least 1, got {per_site_limit}")
    busy = {_key(n) for n in busy_host_names}
    chosen: list[Candidate] = []
    # What the chosen ones are, kept as sets so that each candidate is checked in constant
    # time: a campaign hands over thousands of candidates per run.
    chosen_ids: set[int] = set()
    chosen_names: set[str] = set()
    chosen_partners: set[str] = set()
    per_site: dict[int, int] = {}
    for candidate in sorted(candidates, key=lambda c: (c.due_at, c.host_id)):
        name, partners = _key(candidate.host_name), _partners(candidate)
        if (
            candidate.host_id in chosen_ids
            or per_site.get(candidate.site_id, 0) >= per_site_limit
            or name in busy
            or partners & busy
            or partners & chosen_names  # a chosen one is its partner
            or name in chosen_partners  # it is a chosen one's partner
        ):
            continue
        chosen.append(candidate)
        chosen_ids.add(candidate.host_id)
        chosen_names.add(name)
        chosen_partners |= partners
        per_site[candidate.site_id] = per_site.get(candidate.site_id, 0) + 1
    return chosen


# --- whether to renew now -----------------------------------------------------------------


@dataclass(frozen=True)
class RenewalDecision:
    """Renew now, or why not and the earliest instant (UTC) worth asking again."""

    renew: bool
    reason: str
    not_before: dt.datetime | None


def decide(
    now: dt.datetime,
    due_at: dt.datetime,
    window: MaintenanceWindow | UnreadableWindow | None,
    next_retry_at: dt.datetime | None,
) -> RenewalDecision:
    """In order: not due yet; a retry backoff still pending; the maintenance window closed
    (None is always open); otherwise renew."""
    _require_aware("now", now)
    _require_aware("due_at", due_at)
    if now < due_at:
        return RenewalDecision(False, "not due", due_at.astimezone(UTC))
    if next_retry_at is not None:
        _require_aware("next_retry_at", next_retry_at)
        if now < next_retry_at:
            retry = next_retry_at.astimezone(UTC)
            return RenewalDecision(False, f"retry at {retry.isoformat()}", retry)
    if isinstance(window, UnreadableWindow):
        return RenewalDecision(False, f"maintenance window unreadable: {window.error}", None)
    if window is not None and not window.is_open(now):
        return RenewalDecision(
            False, "waiting for the maintenance window", window.next_opening(now)
        )
    return RenewalDecision(True, "due", None)
