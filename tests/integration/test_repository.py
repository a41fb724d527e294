"""The aggregate repository against a real store: snapshots, temporal loads, conflicts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import uuid
from collections.abc import Callable
from typing import Any, cast

from customer_svc.domain import customer
from customer_svc.domain.customer import CUSTOMER
from eventstore_client import EventStoreClient
from eventstore_client.repository import Executed, Repository
from eventstore_client.store import EventStore


def reserve(state: customer.Customer, order_id: str, amount: int) -> list[customer.CustomerEvent]:
    return customer.reserve_credit(state, order_id, amount)


async def test_a_long_history_loads_from_its_snapshot_plus_at_most_n_events(
    client: EventStoreClient,
) -> None:
    repository = Repository(client, CUSTOMER, snapshot_every=100)
    customer_id = str(uuid.uuid4())
    await repository.execute(customer_id, lambda s: customer.create(s, "Long", 10**9))
    for i in range(1_050):
        await repository.execute(
            customer_id, functools.partial(reserve, order_id=f"o{i}", amount=1)
        )
    # A cold load, as another replica or a restarted service does it.
    loaded = await Repository(client, CUSTOMER, snapshot_every=100).load(customer_id)
    assert loaded.version == 1_051
    assert loaded.snapshot_version == 1_000
    assert loaded.events_read == 51 <= 100
    assert loaded.state.credit_reserved == 1_050

    # The same history folded from the first event gives the same state.
    stale = Repository(client, dataclasses.replace(CUSTOMER, snapshot_schema=2))
    rebuilt = await stale.load(customer_id)
    assert (rebuilt.snapshot_version, rebuilt.events_read) == (
        0,
        1_051,
    )  # schema 1 snapshot ignored
    assert rebuilt.state == loaded.state

    then = await repository.load(customer_id, as_of_version=150)
    assert (then.version, then.snapshot_version, then.events_read) == (150, 100, 50)
    assert then.state.credit_reserved == 149


async def test_conflicting_commands_are_retried_on_fresh_state(client: EventStoreClient) -> None:
    repository = Repository(client, CUSTOMER)
    customer_id = str(uuid.uuid4())
    await repository.execute(customer_id, lambda s: customer.create(s, "Race", 1000))
    # One repository each, as fifteen processes would have: the commands race in the store.
    results = await asyncio.gather(
        *(
            Repository(client, CUSTOMER).execute(
                customer_id, functools.partial(reserve, order_id=f"o{i}", amount=100)
            )
            for i in range(15)
        )
    )
    reserved = sum(1 for r in results for e in r.events if isinstance(e, customer.CreditReserved))
    assert reserved == 10  # never more than the limit, whatever the interleaving
    assert (await repository.load(customer_id)).state.credit_reserved == 1000


async def test_a_reaction_run_twice_appends_once(client: EventStoreClient) -> None:
    repository = Repository(client, CUSTOMER)
    customer_id = str(uuid.uuid4())
    await repository.execute(customer_id, lambda s: customer.create(s, "Twice", 1000))
    cause = str(uuid.uuid4())
    # Two replicas react to the same event at once; both decide from the same state.
    await asyncio.gather(
        repository.execute(
            customer_id, lambda s: customer.reserve_credit(s, "o1", 10), causation_id=cause
        ),
        Repository(client, CUSTOMER).execute(
            customer_id, lambda s: customer.reserve_credit(s, "o1", 10), causation_id=cause
        ),
    )
    events = await client.read_stream_list(CUSTOMER.stream(customer_id))
    assert [e.type for e in events] == ["CustomerCreated", "CreditReserved"]
    assert events[1].metadata["causation_id"] == cause


async def test_a_cached_aggregate_sees_what_other_writers_appended(
    client: EventStoreClient,
) -> None:
    mine, theirs = Repository(client, CUSTOMER), Repository(client, CUSTOMER)
    customer_id = str(uuid.uuid4())
    await mine.create(customer_id, lambda s: customer.create(s, "Shared", 1000))
    assert (await mine.load(customer_id)).version == 1  # now cached
    await theirs.execute(customer_id, functools.partial(reserve, order_id="o1", amount=600))
    # The cached state is stale; the next command must not reserve beyond the limit.
    executed = await mine.execute(
        customer_id, functools.partial(reserve, order_id="o2", amount=600)
    )
    assert [type(e).__name__ for e in executed.events] == ["CreditLimitExceeded"]
    assert (await mine.load(customer_id)).state.credit_reserved == 600


async def test_create_does_not_overwrite_an_existing_aggregate(client: EventStoreClient) -> None:
    repository = Repository(client, CUSTOMER)
    customer_id = str(uuid.uuid4())
    first = await repository.create(customer_id, lambda s: customer.create(s, "First", 10))
    again = await Repository(client, CUSTOMER).create(
        customer_id, lambda s: customer.create(s, "Second", 99)
    )
    assert first.loaded.version == again.loaded.version == 1
    assert again.events == [] and again.loaded.state.name == "First"


class CountingAppends:
    """The real client, with its appends counted (to see how many a batch of commands made)."""

    def __init__(self, client: EventStoreClient) -> None:
        self._client = client
        self.appends = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def append(self, *args: Any, **kwargs: Any) -> Any:
        self.appends += 1
        return await self._client.append(*args, **kwargs)


async def test_commands_waiting_for_one_aggregate_share_an_append(
    client: EventStoreClient,
) -> None:
    counting = CountingAppends(client)
    repository = Repository(cast(EventStore, counting), CUSTOMER)
    customer_id = str(uuid.uuid4())
    await repository.create(customer_id, lambda s: customer.create(s, "Hot", 1000))

    def refused(state: customer.Customer) -> list[customer.CustomerEvent]:
        raise customer.DomainError("refused by the domain")

    commands: list[Callable[[customer.Customer], list[customer.CustomerEvent]]] = [
        functools.partial(reserve, order_id=f"o{i}", amount=100) for i in range(12)
    ]
    commands.insert(5, refused)
    results = await asyncio.gather(
        *(repository.execute(customer_id, c) for c in commands), return_exceptions=True
    )
    # Each caller has its own outcome: the refused command alone failed, the others were
    # decided in arrival order on the state the earlier ones left (the limit holds).
    assert isinstance(results[5], customer.DomainError)
    executed = [r for r in results if isinstance(r, Executed)]
    kinds = [type(r.events[0]).__name__ for r in executed]
    assert kinds == ["CreditReserved"] * 10 + ["CreditLimitExceeded"] * 2
    assert [r.loaded.version for r in executed] == list(range(2, 14))
    assert counting.appends < 1 + len(executed)  # fewer appends than commands
    stored = await client.read_stream_list(CUSTOMER.stream(customer_id))
    assert [e.version for e in stored] == list(range(1, 14))
    assert (await Repository(client, CUSTOMER).load(customer_id)).state.credit_reserved == 1000


async def test_a_batch_refused_as_a_whole_runs_its_commands_one_by_one(
    client: EventStoreClient,
) -> None:
    counting = CountingAppends(client)
    repository = Repository(cast(EventStore, counting), CUSTOMER)
    customer_id = str(uuid.uuid4())
    await repository.create(customer_id, lambda s: customer.create(s, "Replayed", 1000))
    cause = str(uuid.uuid4())

    def blind(state: customer.Customer) -> list[customer.CustomerEvent]:
        """Decides the same event whatever the state: a redelivery writes the same ids."""
        return [customer.CreditReserved(state.customer_id, order_id="o1", amount=10)]

    await repository.execute(customer_id, blind, causation_id=cause)
    counting.appends = 0
    # While a first command holds the aggregate, the redelivery and a new command wait and
    # then run as one batch; the redelivery's ids (already stored) make the store refuse that
    # append as a whole, and run one by one each gets its own answer.
    _, again, other = await asyncio.gather(
        repository.execute(customer_id, functools.partial(reserve, order_id="o2", amount=5)),
        repository.execute(customer_id, blind, causation_id=cause),
        repository.execute(customer_id, functools.partial(reserve, order_id="o3", amount=5)),
    )
    assert counting.appends == 4  # the first, the refused batch, then each on its own
    assert again.loaded.version == 2  # the earlier append's result
    assert [type(e).__name__ for e in other.events] == ["CreditReserved"]
    stored = await client.read_stream_list(CUSTOMER.stream(customer_id))
    assert [e.type for e in stored] == ["CustomerCreated"] + ["CreditReserved"] * 3


async def test_a_cancelled_command_that_was_still_waiting_never_runs(
    client: EventStoreClient,
) -> None:
    repository = Repository(client, CUSTOMER)
    customer_id = str(uuid.uuid4())
    await repository.create(customer_id, lambda s: customer.create(s, "Cancel", 1000))
    first = asyncio.ensure_future(
        repository.execute(customer_id, functools.partial(reserve, order_id="o1", amount=1))
    )
    await asyncio.sleep(0)  # the first holds the aggregate's turn
    waiting = asyncio.ensure_future(
        repository.execute(customer_id, functools.partial(reserve, order_id="o2", amount=1))
    )
    await asyncio.sleep(0)
    waiting.cancel()
    await first
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    stored = await client.read_stream_list(CUSTOMER.stream(customer_id))
    assert [e.version for e in stored] == [1, 2]
