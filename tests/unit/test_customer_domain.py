"""The Customer aggregate and its decisions: pure functions, no I/O."""

from __future__ import annotations

import pytest

from customer_svc.domain.customer import (
    CUSTOMER,
    LIMIT_EXCEEDED,
    UNKNOWN_CUSTOMER,
    CreditLimitExceeded,
    CreditReleased,
    CreditReserved,
    Customer,
    CustomerCreated,
    DomainError,
    create,
    forget,
    from_snapshot,
    release_credit,
    reserve_credit,
    to_snapshot,
)


def customer(limit: int = 1000, *events: object) -> Customer:
    state = CUSTOMER.fold(Customer("c1"), [CustomerCreated("c1", "Ada", limit)])
    return CUSTOMER.fold(state, events)  # type: ignore[arg-type]


def test_create_once() -> None:
    assert create(Customer("c1"), "Ada", 1000) == [CustomerCreated("c1", "Ada", 1000)]
    assert create(customer(), "Ada", 1000) == []


@pytest.mark.parametrize(("name", "limit"), [("", 10), ("Ada", 0), ("Ada", -5)])
def test_create_refuses_bad_input(name: str, limit: int) -> None:
    with pytest.raises(DomainError):
        create(Customer("c1"), name, limit)


def test_reserve_within_the_limit_and_refuse_beyond() -> None:
    state = customer(1000, CreditReserved("c1", "o1", 700))
    assert state.available_credit == 300
    assert reserve_credit(state, "o2", 300) == [CreditReserved("c1", "o2", 300)]
    assert reserve_credit(state, "o3", 301) == [
        CreditLimitExceeded("c1", "o3", 301, 300, LIMIT_EXCEEDED)
    ]


def test_an_order_is_answered_once_by_its_id() -> None:
    reserved = customer(1000, CreditReserved("c1", "o1", 100))
    assert reserve_credit(reserved, "o1", 100) == []
    refused = customer(10, CreditLimitExceeded("c1", "o2", 100, 10, LIMIT_EXCEEDED))
    assert reserve_credit(refused, "o2", 100) == []
    released = customer(1000, CreditReserved("c1", "o3", 100), CreditReleased("c1", "o3", 100))
    assert reserve_credit(released, "o3", 100) == []


def test_unknown_customer_is_refused() -> None:
    assert reserve_credit(Customer("c9"), "o1", 1) == [
        CreditLimitExceeded("c9", "o1", 1, 0, UNKNOWN_CUSTOMER)
    ]


def test_release_only_what_is_held_and_only_once() -> None:
    state = customer(1000, CreditReserved("c1", "o1", 400))
    assert release_credit(state, "o1") == [CreditReleased("c1", "o1", 400)]
    after = CUSTOMER.evolve(state, CreditReleased("c1", "o1", 400))
    assert after.credit_reserved == 0
    assert release_credit(after, "o1") == []
    assert release_credit(state, "unknown") == []


def test_snapshot_round_trip() -> None:
    state = customer(
        1000,
        CreditReserved("c1", "o1", 400),
        CreditLimitExceeded("c1", "o2", 900, 600, LIMIT_EXCEEDED),
        CreditReserved("c1", "o3", 100),
        CreditReleased("c1", "o3", 100),
    )
    assert from_snapshot(to_snapshot(state)) == state


def test_codec_round_trip_and_unknown_types() -> None:
    event = CreditReserved("c1", "o1", 5)
    assert CUSTOMER.codec.decode(*CUSTOMER.codec.encode(event)) == event
    assert CUSTOMER.codec.decode("SomethingNewer", b"{}", {}) is None


def test_a_forgotten_customer_keeps_its_credit_and_loses_its_name() -> None:
    created = CUSTOMER.fold(Customer("c1"), [CustomerCreated("c1", "Ada", 1000)])
    reserved = CUSTOMER.fold(created, reserve_credit(created, "o1", 400))
    [event] = forget(reserved)
    gone = CUSTOMER.fold(reserved, [event])
    assert (gone.name, gone.forgotten, gone.credit_reserved) == ("", True, 400)
    assert forget(gone) == []  # once is enough
    assert from_snapshot(to_snapshot(gone)) == gone
    with pytest.raises(DomainError):
        forget(Customer("nobody"))
