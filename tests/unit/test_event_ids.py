"""The client's event ids: random version-4 UUIDs in their canonical text form, as the store
(and every other client) expects."""

from __future__ import annotations

import uuid

from eventstore_client.client import NewEvent, new_event_id


def test_event_ids_are_canonical_random_uuids() -> None:
    ids = [new_event_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:2_000]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # canonical: lower case, hyphenated
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # Every variant nibble (8, 9, a, b) occurs: the two free bits are random too.
    assert {text[19] for text in ids} == set("89ab")


def test_each_new_event_gets_its_own_id() -> None:
    assert NewEvent("T").id != NewEvent("T").id
    assert NewEvent.json("T", {}).id != NewEvent.json("T", {}).id
