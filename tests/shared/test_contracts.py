"""The queue contract: IDs and plain JSON only, bounded in size."""

from __future__ import annotations

import json

import pytest

from shared import contracts
from shared.db.models import IssuanceRequest
from shared.issuance import ISSUE_BATCH, issue_messages


def test_issue_batch_message_is_json_of_ids() -> None:
    message = contracts.issue_batch([3, 1, 2])
    assert message.task == contracts.TASK_ISSUE_BATCH == "certfleet.issuer.issue_batch"
    assert message.queue == contracts.QUEUE_ISSUE == "issue"
    assert message.kwargs == {"request_ids": [3, 1, 2]}
    assert json.loads(json.dumps(message.kwargs)) == message.kwargs


def test_ids_are_coerced_to_int() -> None:
    message = contracts.issue_batch(["7", 8])  # type: ignore[list-item]
    assert message.kwargs["request_ids"] == [7, 8]
    assert all(type(i) is int for i in message.kwargs["request_ids"])


def test_non_ids_are_refused() -> None:
    with pytest.raises((TypeError, ValueError)):
        contracts.issue_batch([object()])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        contracts.issue_batch(["-----BEGIN PRIVATE KEY-----"])  # type: ignore[list-item]


def test_size_bounds() -> None:
    with pytest.raises(ValueError, match="1 to 1000"):
        contracts.issue_batch([])
    with pytest.raises(ValueError, match="1 to 1000"):
        contracts.issue_batch(list(range(contracts.MAX_IDS_PER_MESSAGE + 1)))
    full = contracts.issue_batch(list(range(contracts.MAX_IDS_PER_MESSAGE)))
    assert len(full.kwargs["request_ids"]) == 1000


def test_create_authority_message() -> None:
    message = contracts.create_authority("12")  # type: ignore[arg-type]
    assert message.task == contracts.TASK_CREATE_AUTHORITY
    assert message.queue == contracts.QUEUE_ISSUE
    assert message.kwargs == {"authority_id": 12}
    assert json.dumps(message.kwargs) == '{"authority_id": 12}'


def test_message_is_frozen() -> None:
    message = contracts.create_authority(1)
    with pytest.raises(AttributeError):
        message.task = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("n", "size", "expected_sizes"),
    [
        (0, 10, []),
        (5, 10, [5]),
        (25, 10, [10, 10, 5]),
        (3, 0, [1, 1, 1]),
        (2500, 5000, [1000, 1000, 500]),
    ],
)
def test_chunked(n: int, size: int, expected_sizes: list[int]) -> None:
    ids = list(range(n))
    chunks = contracts.chunked(ids, size)
    assert [len(c) for c in chunks] == expected_sizes
    assert [i for chunk in chunks for i in chunk] == ids
    for chunk in chunks:
        contracts.issue_batch(chunk)  # every chunk is a valid message


def test_queue_names_are_distinct() -> None:
    queues = {contracts.QUEUE_ISSUE, contracts.QUEUE_DISTRIBUTE, contracts.QUEUE_EXPIRY}
    assert len(queues) == 3


def test_server_key_requests_go_in_small_messages() -> None:
    messages = contracts.issue_batches(list(range(250)), list(range(1000, 1060)), 100)
    sizes = [len(m.kwargs["request_ids"]) for m in messages]
    assert sizes == [100, 100, 50, 25, 25, 10]
    sent = [i for m in messages for i in m.kwargs["request_ids"]]
    assert sent == [*range(250), *range(1000, 1060)]
    assert {m.task for m in messages} == {contracts.TASK_ISSUE_BATCH}
    # A batch size below the keygen one bounds both.
    assert [len(m.kwargs["request_ids"]) for m in contracts.issue_batches([1], [2, 3, 4], 2)] == [
        1,
        2,
        1,
    ]


def test_the_watcher_spreads_a_burst_of_renewals_over_many_messages() -> None:
    """A campaign run starts up to 2,000 renewals: in messages of ISSUE_BATCH, so that every
    issuer process gets some, with server-held keys in smaller ones."""
    rows = [
        IssuanceRequest(id=i, csr_pem="-----BEGIN CERTIFICATE REQUEST-----" if i % 4 else None)
        for i in range(1, 2001)
    ]
    messages = issue_messages(rows)
    sizes = [len(m.kwargs["request_ids"]) for m in messages]
    assert sizes == [ISSUE_BATCH] * 15 + [contracts.KEYGEN_IDS_PER_MESSAGE] * 20
    keygen = [i for m in messages[15:] for i in m.kwargs["request_ids"]]
    assert keygen == [r.id for r in rows if r.csr_pem is None]
    assert sorted(i for m in messages for i in m.kwargs["request_ids"]) == list(range(1, 2001))
