"""Sealing personal fields (crypto-shredding): pure, with keys in memory."""

from __future__ import annotations

import os

import pytest

from eventstore_client.personal import (
    FORGOTTEN,
    PREFIX,
    Sealing,
    SubjectForgotten,
    open_json,
    seal_json,
)


def test_a_sealed_field_opens_with_its_subject_s_key_only() -> None:
    key = os.urandom(32)
    sealed = Sealing("c1", key).seal("name", "Ada Lovelace")
    assert sealed.startswith(PREFIX) and "Ada" not in sealed
    assert Sealing("c1", key).open("name", sealed) == "Ada Lovelace"
    # Bound to its subject and field: moved elsewhere it does not open.
    assert Sealing("c2", key).open("name", sealed) == FORGOTTEN
    assert Sealing("c1", key).open("email", sealed) == FORGOTTEN
    assert Sealing("c1", os.urandom(32)).open("name", sealed) == FORGOTTEN


def test_without_the_key_a_field_is_forgotten_and_nothing_can_be_sealed() -> None:
    sealed = Sealing("c1", os.urandom(32)).seal("name", "Ada")
    erased = Sealing("c1", None)
    assert erased.open("name", sealed) == FORGOTTEN
    assert erased.open("name", "written before sealing") == "written before sealing"
    with pytest.raises(SubjectForgotten):
        erased.seal("name", "Ada")


def test_only_the_named_fields_of_an_event_are_sealed() -> None:
    sealing = Sealing("c1", os.urandom(32))
    data = b'{"customer_id":"c1","name":"Ada","credit_limit":1000}'
    sealed = seal_json(sealing, ("name",), data)
    assert b"Ada" not in sealed and b'"customer_id":"c1"' in sealed and b"1000" in sealed
    assert open_json(sealing, ("name",), sealed) == data
    assert seal_json(sealing, (), data) is data  # no personal fields: untouched
    assert b'"name":""' in open_json(Sealing("c1", None), ("name",), sealed)
