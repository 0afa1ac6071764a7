"""Renewal policy: due points with jitter, maintenance windows across DST and midnight, retry
delays, failover separation and the order of the renewal decision.

Every instant is written out in UTC so that a DST mistake shows up as a wrong hour.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections.abc import Sequence

import pytest

from shared.renewal import (
    Candidate,
    MaintenanceWindow,
    RenewalDecision,
    choose_batch,
    decide,
    renewal_due_at,
    renewal_retry_delay,
)

try:
    import hypothesis
    from hypothesis import strategies as st
except ImportError:  # optional: the seeded property test below always runs
    hypothesis = None  # type: ignore[assignment]

UTC = dt.UTC
HOUR = dt.timedelta(hours=1)
CPH = "Europe/Copenhagen"
NYC = "America/New_York"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def window(
    start: str, end: str, zone: str = CPH, days: list[str] | None = None
) -> MaintenanceWindow:
    value: dict[str, object] = {"start": start, "end": end, "timezone": zone}
    if days is not None:
        value["days"] = days
    result = MaintenanceWindow.from_json(value)
    assert result is not None
    return result


# --- renewal_due_at -----------------------------------------------------------------------

ISSUED = utc(2027, 1, 10, 12)
EXPIRES = ISSUED + dt.timedelta(days=397)
SEEDS = [f"{n * 7919:040x}" for n in range(500)]


def test_due_point_leaves_the_fraction_of_the_lifetime() -> None:
    due = renewal_due_at(ISSUED, EXPIRES, 1 / 3, "serial", max_jitter=dt.timedelta(0))
    assert due == EXPIRES - dt.timedelta(days=397) / 3
    assert due.tzinfo is UTC


def test_jitter_is_within_a_day_deterministic_and_spread() -> None:
    nominal = EXPIRES - dt.timedelta(days=397) / 3
    jitters = [nominal - renewal_due_at(ISSUED, EXPIRES, 1 / 3, seed) for seed in SEEDS]
    assert all(dt.timedelta(0) <= j <= dt.timedelta(days=1) for j in jitters)
    assert jitters == [nominal - renewal_due_at(ISSUED, EXPIRES, 1 / 3, s) for s in SEEDS]
    assert len(set(jitters)) == len(SEEDS)
    assert min(jitters) < dt.timedelta(hours=2) and max(jitters) > dt.timedelta(hours=22)
    assert dt.timedelta(hours=10) < sum(jitters, dt.timedelta(0)) / len(jitters) < HOUR * 14


def test_jitter_is_at_most_five_percent_of_a_short_lifetime() -> None:
    expires = ISSUED + dt.timedelta(days=2)  # 5 % is 2.4 h, below the one-day cap
    nominal = expires - dt.timedelta(days=2) * 0.25
    jitters = [nominal - renewal_due_at(ISSUED, expires, 0.25, seed) for seed in SEEDS]
    assert all(dt.timedelta(0) <= j <= dt.timedelta(hours=2.4) for j in jitters)
    assert max(jitters) > dt.timedelta(hours=2.2)


def test_due_point_is_never_before_not_before() -> None:
    expires = ISSUED + dt.timedelta(days=1)  # nominal 14.4 min after issue, jitter up to 72
    dues = [renewal_due_at(ISSUED, expires, 0.99, seed) for seed in SEEDS]
    assert min(dues) == ISSUED
    assert any(due > ISSUED for due in dues)


def test_due_point_is_the_same_instant_in_any_zone_and_returned_in_utc() -> None:
    offset = dt.timezone(dt.timedelta(hours=-5))
    local = renewal_due_at(ISSUED.astimezone(offset), EXPIRES.astimezone(offset), 0.5, "s")
    assert local == renewal_due_at(ISSUED, EXPIRES, 0.5, "s")
    assert local.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_fraction_must_be_strictly_between_zero_and_one(fraction: float) -> None:
    with pytest.raises(ValueError, match="renew_at_fraction"):
        renewal_due_at(ISSUED, EXPIRES, fraction, "s")


def test_due_point_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="naive"):
        renewal_due_at(ISSUED.replace(tzinfo=None), EXPIRES, 0.5, "s")
    with pytest.raises(ValueError, match="later"):
        renewal_due_at(EXPIRES, ISSUED, 0.5, "s")
    with pytest.raises(ValueError, match="negative"):
        renewal_due_at(ISSUED, EXPIRES, 0.5, "s", max_jitter=-HOUR)


# --- renewal_retry_delay ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "hours"), [(1, 1), (2, 2), (3, 4), (4, 8), (5, 12), (6, 12), (10**6, 12)]
)
def test_retry_delay_doubles_from_an_hour_up_to_twelve(attempts: int, hours: int) -> None:
    assert renewal_retry_delay(attempts) == dt.timedelta(hours=hours)


@pytest.mark.parametrize("attempts", [0, -1])
def test_retry_delay_needs_a_failed_attempt(attempts: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        renewal_retry_delay(attempts)


# --- MaintenanceWindow.from_json ----------------------------------------------------------


def test_no_window_means_always_open() -> None:
    assert MaintenanceWindow.from_json(None) is None
    assert decide(utc(2027, 1, 13, 12), utc(2027, 1, 1), None, None).renew


def test_days_default_to_all_seven() -> None:
    every_day = window("01:00", "04:00")
    assert every_day.days == frozenset(range(7))
    assert all(every_day.is_open(utc(2027, 1, day, 1)) for day in range(11, 18))  # Mon..Sun


def test_a_24_hour_window_on_every_day_is_no_window() -> None:
    assert MaintenanceWindow.from_json({"start": "03:00", "end": "03:00", "timezone": CPH}) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"start": "24:00", "end": "04:00", "timezone": CPH}, "HH:MM"),
        ({"start": "1:00", "end": "04:00", "timezone": CPH}, "HH:MM"),
        ({"start": "01:00", "end": "04:60", "timezone": CPH}, "HH:MM"),
        ({"start": 100, "end": "04:00", "timezone": CPH}, "HH:MM"),
        ({"end": "04:00", "timezone": CPH}, "HH:MM"),
        ({"start": "01:00", "end": "04:00", "timezone": "Mars/Olympus"}, "time zone"),
        ({"start": "01:00", "end": "04:00", "timezone": "../etc/passwd"}, "time zone"),
        ({"start": "01:00", "end": "04:00"}, "timezone"),
        ({"start": "01:00", "end": "04:00", "timezone": CPH, "days": "sat"}, "list"),
        ({"start": "01:00", "end": "04:00", "timezone": CPH, "days": ["Saturday"]}, "day"),
        ({"start": "01:00", "end": "04:00", "timezone": CPH, "days": []}, "never"),
    ],
)
def test_from_json_rejects_bad_windows(value: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MaintenanceWindow.from_json(value)


def test_window_methods_reject_naive_datetimes() -> None:
    naive = dt.datetime(2027, 1, 16, 1)
    weekend = window("01:00", "04:00", days=["sat", "sun"])
    for method in (weekend.is_open, weekend.next_opening, weekend.closes_at):
        with pytest.raises(ValueError, match="naive"):
            method(naive)


# --- windows: days, midnight, next opening ------------------------------------------------


def test_friday_night_question_in_winter_and_summer() -> None:
    weekend = window("01:00", "04:00", days=["sat", "sun"])
    # Winter (UTC+1): Friday 23:00 UTC is Saturday 00:00 local; opens Saturday 00:00 UTC.
    assert not weekend.is_open(utc(2027, 1, 15, 23))
    assert weekend.next_opening(utc(2027, 1, 15, 23)) == utc(2027, 1, 16, 0)
    # Summer (UTC+2): Friday 23:00 UTC is Saturday 01:00 local, already open.
    assert weekend.is_open(utc(2027, 7, 16, 23))
    assert weekend.next_opening(utc(2027, 7, 16, 23)) == utc(2027, 7, 16, 23)
    assert weekend.next_opening(utc(2027, 7, 16, 22)) == utc(2027, 7, 16, 23)
    assert weekend.closes_at(utc(2027, 7, 16, 23)) == utc(2027, 7, 17, 2)


def test_day_filter_skips_to_the_next_listed_day() -> None:
    weekend = window("01:00", "04:00", days=["sat", "sun"])
    assert weekend.is_open(utc(2027, 1, 17, 2, 59))  # Sunday 03:59 local
    assert not weekend.is_open(utc(2027, 1, 17, 3))  # Sunday 04:00 local: closed
    assert not weekend.is_open(utc(2027, 1, 18, 1))  # Monday 02:00 local: not a listed day
    assert weekend.next_opening(utc(2027, 1, 17, 3)) == utc(2027, 1, 23, 0)  # next Saturday


def test_next_opening_is_returned_in_utc() -> None:
    weekend = window("01:00", "04:00", days=["sat", "sun"])
    local = dt.datetime(2027, 1, 16, 2, tzinfo=weekend.timezone)
    assert weekend.next_opening(local) == utc(2027, 1, 16, 1)
    assert weekend.next_opening(local).utcoffset() == dt.timedelta(0)


def test_window_crossing_midnight_belongs_to_the_day_it_starts() -> None:
    friday_night = window("22:00", "02:00", zone=NYC, days=["fri"])  # EST, UTC-5
    assert not friday_night.is_open(utc(2027, 1, 16, 2, 59))  # Fri 21:59
    assert friday_night.is_open(utc(2027, 1, 16, 3))  # Fri 22:00
    assert friday_night.is_open(utc(2027, 1, 16, 6, 59))  # Sat 01:59, started on Friday
    assert friday_night.closes_at(utc(2027, 1, 16, 5)) == utc(2027, 1, 16, 7)
    assert not friday_night.is_open(utc(2027, 1, 16, 7))  # Sat 02:00
    assert not friday_night.is_open(utc(2027, 1, 17, 4))  # Sat 23:00: Saturday not listed
    assert friday_night.next_opening(utc(2027, 1, 16, 7)) == utc(2027, 1, 23, 3)


def test_window_crossing_midnight_in_summer_new_york() -> None:
    nightly = window("23:30", "00:30", zone=NYC)  # EDT, UTC-4
    assert nightly.next_opening(utc(2027, 7, 1, 12)) == utc(2027, 7, 2, 3, 30)
    assert nightly.closes_at(utc(2027, 7, 2, 4)) == utc(2027, 7, 2, 4, 30)


def test_24_hour_window_runs_from_start_to_start() -> None:
    saturday = window("06:00", "06:00", days=["sat"])
    assert saturday.next_opening(utc(2027, 1, 15, 12)) == utc(2027, 1, 16, 5)
    assert saturday.is_open(utc(2027, 1, 17, 4, 59))  # Sunday 05:59 local
    assert not saturday.is_open(utc(2027, 1, 17, 5))
    assert saturday.closes_at(utc(2027, 1, 16, 5)) == utc(2027, 1, 17, 5)


def test_touching_24_hour_windows_close_as_one() -> None:
    weekend = window("00:00", "00:00", days=["sat", "sun"])
    assert weekend.closes_at(utc(2027, 1, 16, 12)) == utc(2027, 1, 17, 23)  # Monday 00:00 CET


def test_closes_at_refuses_a_closed_or_never_closing_window() -> None:
    weekend = window("01:00", "04:00", days=["sat", "sun"])
    with pytest.raises(ValueError, match="closed"):
        weekend.closes_at(utc(2027, 1, 13, 12))
    always = MaintenanceWindow(dt.time(0), dt.time(0), weekend.timezone)
    assert always.is_open(utc(2027, 1, 13, 12))
    with pytest.raises(ValueError, match="never closes"):
        always.closes_at(utc(2027, 1, 13, 12))


# --- windows across DST -------------------------------------------------------------------


def test_spring_forward_window_inside_the_skipped_hour_is_skipped() -> None:
    # Copenhagen 2027-03-28: 02:00 CET jumps to 03:00 CEST at 01:00 UTC.
    skipped = window("02:00", "03:00")
    assert not any(
        skipped.is_open(utc(2027, 3, 28, 0) + n * dt.timedelta(minutes=5)) for n in range(36)
    )
    assert skipped.next_opening(utc(2027, 3, 27, 23)) == utc(2027, 3, 29, 0)  # 02:00 CEST
    assert skipped.next_opening(utc(2027, 3, 26, 23)) == utc(2027, 3, 27, 1)  # 02:00 CET


def test_spring_forward_window_opens_at_the_first_valid_local_instant() -> None:
    straddling = window("02:30", "03:30")
    assert straddling.next_opening(utc(2027, 3, 27, 23)) == utc(2027, 3, 28, 1)  # 03:00 CEST
    assert not straddling.is_open(utc(2027, 3, 28, 0, 59, 59))
    assert straddling.closes_at(utc(2027, 3, 28, 1)) == utc(2027, 3, 28, 1, 30)
    longer = window("01:00", "04:00")  # two elapsed hours that night
    assert longer.next_opening(utc(2027, 3, 27, 23)) == utc(2027, 3, 28, 0)
    assert longer.closes_at(utc(2027, 3, 28, 0)) == utc(2027, 3, 28, 2)


def test_spring_forward_in_new_york_with_a_window_ending_in_the_gap() -> None:
    # New York 2027-03-14: 02:00 EST jumps to 03:00 EDT at 07:00 UTC.
    saturday_night = window("23:00", "02:30", zone=NYC, days=["sat"])
    assert saturday_night.next_opening(utc(2027, 3, 13, 12)) == utc(2027, 3, 14, 4)
    assert saturday_night.closes_at(utc(2027, 3, 14, 4)) == utc(2027, 3, 14, 7)
    assert not saturday_night.is_open(utc(2027, 3, 14, 7))


def test_fall_back_keeps_the_repeated_hour_inside_the_window() -> None:
    # Copenhagen 2027-10-31: 03:00 CEST falls back to 02:00 CET at 01:00 UTC.
    night = window("02:00", "03:00")
    assert night.next_opening(utc(2027, 10, 30, 12)) == utc(2027, 10, 31, 0)  # 02:00 CEST
    assert night.is_open(utc(2027, 10, 31, 1, 30))  # 02:30 CET, the second time round
    assert night.closes_at(utc(2027, 10, 31, 0)) == utc(2027, 10, 31, 2)  # 03:00 CET
    early = window("01:00", "02:30")
    assert early.is_open(utc(2027, 10, 31, 0, 45))  # 02:45 CEST: the clock comes back
    assert early.closes_at(utc(2027, 10, 30, 23)) == utc(2027, 10, 31, 1, 30)


def test_fall_back_in_new_york_and_a_25_hour_day() -> None:
    # New York 2027-11-07: 02:00 EDT falls back to 01:00 EST at 06:00 UTC.
    short = window("01:00", "01:30", zone=NYC, days=["sun"])
    assert short.next_opening(utc(2027, 11, 6, 12)) == utc(2027, 11, 7, 5)
    assert short.closes_at(utc(2027, 11, 7, 5)) == utc(2027, 11, 7, 6, 30)
    sunday = window("00:00", "00:00", zone=NYC, days=["sun"])
    assert sunday.closes_at(utc(2027, 11, 7, 4)) - utc(2027, 11, 7, 4) == 25 * HOUR


@pytest.mark.parametrize(
    ("zone", "first_day"),
    [
        (CPH, dt.date(2027, 3, 25)),  # spring forward on Sunday 28 March
        (CPH, dt.date(2027, 10, 28)),  # fall back on Sunday 31 October
        (NYC, dt.date(2027, 3, 11)),  # spring forward on Sunday 14 March
        (NYC, dt.date(2027, 11, 4)),  # fall back on Sunday 7 November
    ],
)
@pytest.mark.parametrize(
    ("start", "end", "days"),
    [
        ("02:00", "03:00", None),
        ("01:30", "02:30", ["sun"]),
        ("23:00", "02:30", ["sat", "sun"]),
        ("02:30", "02:30", ["sat"]),
    ],
)
def test_window_answers_agree_across_dst_weeks(
    zone: str, start: str, end: str, days: list[str] | None, first_day: dt.date
) -> None:
    subject = window(start, end, zone=zone, days=days)
    step = dt.timedelta(minutes=30)
    now = dt.datetime.combine(first_day, dt.time(), UTC)
    for _ in range(int(dt.timedelta(days=8) / step)):
        opening = subject.next_opening(now)
        if subject.is_open(now):
            assert opening == now
            closes = subject.closes_at(now)
            assert closes > now and not subject.is_open(closes)
        else:
            assert opening > now and subject.is_open(opening)
            assert not subject.is_open(opening - dt.timedelta(seconds=1))
            if opening > now + step:
                assert not subject.is_open(now + step)
                assert subject.next_opening(now + step) == opening
        now += step


# --- choose_batch -------------------------------------------------------------------------


def host(
    host_id: int,
    name: str,
    due_hour: int,
    *,
    site: int = 1,
    covers: Sequence[str] = (),
    covered_by: Sequence[str] = (),
) -> Candidate:
    return Candidate(
        host_id=host_id,
        host_name=name,
        site_id=site,
        roles=("failover",) if covers else ("recording",),
        failover_for=tuple(covers),
        due_at=utc(2027, 1, 1) + due_hour * HOUR,
        covered_by=tuple(covered_by),
    )


def names(batch: Sequence[Candidate]) -> list[str]:
    return [c.host_name for c in batch]


def test_recording_server_and_its_failover_never_go_together() -> None:
    rec = host(1, "rec01", due_hour=1)
    failover = host(2, "fo01", due_hour=2, covers=["rec01"])
    assert names(choose_batch([failover, rec], per_site_limit=10)) == ["rec01"]
    earlier_failover = host(2, "fo01", due_hour=0, covers=["rec01"])
    assert names(choose_batch([rec, earlier_failover], per_site_limit=10)) == ["fo01"]


def test_held_back_partner_does_not_block_unrelated_hosts() -> None:
    batch = choose_batch(
        [
            host(1, "rec01", 1),
            host(2, "fo01", 2, covers=["rec01", "rec02"]),
            host(3, "rec02", 3),
            host(4, "rec03", 4),
        ],
        per_site_limit=10,
    )
    assert names(batch) == ["rec01", "rec02", "rec03"]  # one failover covering two is fine


def test_failover_relation_matches_names_without_case() -> None:
    batch = choose_batch(
        [host(1, "REC01", 1), host(2, "fo01", 2, covers=["rec01"])], per_site_limit=5
    )
    assert names(batch) == ["REC01"]


def test_busy_partner_is_skipped_in_both_directions() -> None:
    failover = host(1, "fo01", 1, covers=["rec01"])
    rec = host(2, "rec01", 2, covered_by=["fo01"])
    other = host(3, "rec02", 3)
    assert names(choose_batch([failover, other], per_site_limit=5, busy_host_names={"rec01"})) == [
        "rec02"
    ]
    assert names(choose_batch([rec, other], per_site_limit=5, busy_host_names=["FO01"])) == [
        "rec02"
    ]
    assert names(choose_batch([rec, other], per_site_limit=5, busy_host_names=["rec01"])) == [
        "rec02"
    ]


def test_per_site_limit_takes_the_most_overdue_of_each_site() -> None:
    fleet = [host(n, f"s1-rec{n}", due_hour=10 - n, site=1) for n in range(1, 6)]
    fleet += [host(n, f"s2-rec{n}", due_hour=n, site=2) for n in range(6, 9)]
    batch = choose_batch(fleet, per_site_limit=2)
    assert names(batch) == ["s1-rec5", "s1-rec4", "s2-rec6", "s2-rec7"]
    with pytest.raises(ValueError, match="per_site_limit"):
        choose_batch(fleet, per_site_limit=0)


def test_most_overdue_first_with_ties_by_host_id_whatever_the_input_order() -> None:
    fleet = [host(5, "e", 2), host(3, "c", 1), host(4, "d", 1), host(1, "a", 3), host(2, "b", 1)]
    expected = ["b", "c", "d", "e", "a"]
    for order in itertools.permutations(fleet):
        assert names(choose_batch(order, per_site_limit=10)) == expected


def test_a_host_listed_twice_is_chosen_once() -> None:
    rec = host(1, "rec01", 1)
    assert choose_batch([rec, rec], per_site_limit=5) == [rec]


def assert_batch_is_valid(
    candidates: Sequence[Candidate], busy: set[str], limit: int, batch: list[Candidate]
) -> None:
    """The rules of choose_batch, checked from the outside, plus maximality: every candidate
    left out has a reason, so nothing is held back for nothing."""

    def pair(a: Candidate, b: Candidate) -> bool:
        return a.host_name in b.failover_for or b.host_name in a.failover_for

    assert batch == sorted(batch, key=lambda c: (c.due_at, c.host_id))
    for a, b in itertools.combinations(batch, 2):
        assert not pair(a, b)
    for site in {c.site_id for c in batch}:
        assert sum(c.site_id == site for c in batch) <= limit
    for chosen in batch:
        assert chosen.host_name not in busy and not set(chosen.failover_for) & busy
        assert not set(chosen.covered_by) & busy
    for left in set(candidates) - set(batch):
        earlier = [c for c in batch if (c.due_at, c.host_id) < (left.due_at, left.host_id)]
        assert (
            sum(c.site_id == left.site_id for c in earlier) >= limit
            or any(pair(left, c) for c in earlier)
            or left.host_name in busy
            or set(left.failover_for) & busy
            or set(left.covered_by) & busy
        )


def random_fleet(rng: random.Random, size: int) -> tuple[list[Candidate], set[str]]:
    recs = [f"rec{n}" for n in range(size)]
    fleet = []
    for n in range(size):
        covers = rng.sample(recs, rng.randint(0, min(2, size))) if rng.random() < 0.4 else []
        fleet.append(
            host(n, f"h{n}" if covers else recs[n], rng.randint(0, 5), site=n % 3, covers=covers)
        )
    busy = set(rng.sample([c.host_name for c in fleet], rng.randint(0, min(2, size))))
    return fleet, busy


def test_choose_batch_rules_hold_for_seeded_random_fleets() -> None:
    for seed in range(300):
        rng = random.Random(seed)
        fleet, busy = random_fleet(rng, rng.randint(0, 12))
        limit = rng.randint(1, 4)
        batch = choose_batch(fleet, per_site_limit=limit, busy_host_names=busy)
        assert_batch_is_valid(fleet, busy, limit, batch)
        rng.shuffle(fleet)
        assert choose_batch(fleet, per_site_limit=limit, busy_host_names=busy) == batch


if hypothesis is not None:

    @hypothesis.settings(max_examples=200, deadline=None)
    @hypothesis.given(seed=st.integers(0, 2**32), size=st.integers(0, 15), limit=st.integers(1, 4))
    def test_choose_batch_rules_hold_for_any_fleet(seed: int, size: int, limit: int) -> None:
        fleet, busy = random_fleet(random.Random(seed), size)
        batch = choose_batch(fleet, per_site_limit=limit, busy_host_names=busy)
        assert_batch_is_valid(fleet, busy, limit, batch)

else:

    @pytest.mark.skip(reason="hypothesis is not installed")
    def test_choose_batch_rules_hold_for_any_fleet() -> None:
        raise AssertionError("skipped")


# --- decide -------------------------------------------------------------------------------

WEEKEND = MaintenanceWindow.from_json(
    {"start": "01:00", "end": "04:00", "timezone": CPH, "days": ["sat", "sun"]}
)
WEDNESDAY = utc(2027, 1, 13, 12)  # the window is closed
SATURDAY = utc(2027, 1, 16, 1)  # 02:00 local: open


def test_not_due_comes_first() -> None:
    due = utc(2027, 2, 1)
    decision = decide(WEDNESDAY, due, WEEKEND, next_retry_at=utc(2027, 3, 1))
    assert decision == RenewalDecision(False, "not due", due)


def test_pending_retry_comes_before_the_window() -> None:
    retry = utc(2027, 1, 13, 14)
    decision = decide(WEDNESDAY, utc(2027, 1, 1), WEEKEND, next_retry_at=retry)
    assert decision == RenewalDecision(False, "retry at 2027-01-13T14:00:00+00:00", retry)


def test_closed_window_waits_for_the_next_opening() -> None:
    decision = decide(WEDNESDAY, utc(2027, 1, 1), WEEKEND, next_retry_at=utc(2027, 1, 13, 11))
    assert decision == RenewalDecision(
        False, "waiting for the maintenance window", utc(2027, 1, 16)
    )


def test_due_in_an_open_window_renews_even_at_the_boundaries() -> None:
    assert decide(SATURDAY, SATURDAY, WEEKEND, next_retry_at=SATURDAY) == RenewalDecision(
        True, "due", None
    )
    assert decide(WEDNESDAY, utc(2027, 1, 1), None, None).renew


def test_decide_rejects_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        decide(dt.datetime(2027, 1, 16, 1), SATURDAY, WEEKEND, None)
    with pytest.raises(ValueError, match="naive"):
        decide(SATURDAY, utc(2027, 1, 1), WEEKEND, dt.datetime(2027, 1, 16, 1))
