"""Notice channels' targets, read one way by the API that stores them and the expiry
watcher that sends to them."""

from __future__ import annotations


def recipients_of(target: str) -> list[str]:
    """The addresses of an email channel's comma-separated target."""
    return [part.strip() for part in target.split(",") if part.strip()]
