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

MAX_IDS_PER_MESSAGE = 1000


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


def create_authority(authority_id: int) -> Message:
    return Message(TASK_CREATE_AUTHORITY, QUEUE_ISSUE, {"authority_id": int(authority_id)})


def chunked(ids: Sequence[int], size: int) -> list[list[int]]:
    size = max(1, min(size, MAX_IDS_PER_MESSAGE))
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]
