"""The Order aggregate and its life cycle: pure functions, no I/O."""

from __future__ import annotations

import pytest

from order_svc.domain.order import (
    ORDER,
    Order,
    OrderApproved,
    OrderCancelled,
    OrderCreated,
    OrderError,
    OrderNotFound,
    OrderRejected,
    State,
    approve,
    cancel,
    create,
    from_snapshot,
    reject,
    to_snapshot,
)


def placed(*events: object) -> Order:
    return ORDER.fold(Order("o1"), [OrderCreated("o1", "c1", 100), *events])  # type: ignore[list-item]


def test_create_once_and_refuse_bad_input() -> None:
    assert create(Order("o1"), "c1", 100) == [OrderCreated("o1", "c1", 100)]
    assert create(placed(), "c1", 100) == []
    with pytest.raises(OrderError):
        create(Order("o1"), "c1", 0)


def test_the_credit_answer_moves_only_a_pending_order() -> None:
    assert approve(placed()) == [OrderApproved("o1")]
    assert reject(placed(), "no") == [OrderRejected("o1", "no")]
    assert approve(placed(OrderApproved("o1"))) == []  # redelivered answer
    assert approve(placed(OrderCancelled("o1", "c1"))) == []  # reservation after cancellation
    assert reject(placed(OrderApproved("o1")), "late") == []


def test_cancel_pending_or_approved_once() -> None:
    assert cancel(placed()) == [OrderCancelled("o1", "c1")]
    assert cancel(placed(OrderApproved("o1"))) == [OrderCancelled("o1", "c1")]
    assert cancel(placed(OrderCancelled("o1", "c1"))) == []
    with pytest.raises(OrderError):
        cancel(placed(OrderRejected("o1", "no")))
    with pytest.raises(OrderNotFound):
        cancel(Order("o2"))


def test_states_and_snapshot_round_trip() -> None:
    order = placed(OrderRejected("o1", "credit limit exceeded"))
    assert (order.state, order.rejection_reason) == (State.REJECTED, "credit limit exceeded")
    assert from_snapshot(to_snapshot(order)) == order
