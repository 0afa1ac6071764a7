"""The clock, injectable so that tests never sleep."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

DAY = dt.timedelta(days=1)


def days_left(moment: dt.datetime, now: dt.datetime) -> int:
    """Whole days from `now` until `moment`, floored: 0 on the last day, negative once past.
    Every place that tells an operator how long a certificate or CA has (the CLI's and the
    API's reports, the dashboard, the notices, the doctor) says it this way."""
    return (moment - now) // DAY


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class FixedClock:
    """A clock that moves only when told to."""

    def __init__(self, start: dt.datetime) -> None:
        self._now = start

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, delta: dt.timedelta) -> None:
        self._now += delta
