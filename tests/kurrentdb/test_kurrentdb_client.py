"""KurrentDB's own Python client (PyPI `kurrentdbclient`) against our KurrentDB port: appends
with each expectation, conflicts, idempotent retries, reads of streams and of $all with filters,
catch-up-then-live subscriptions, deletes, tombstones and metadata, over plaintext and TLS;
and events crossing between our own port and KurrentDB's, in one global order."""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kurrentdbclient import (
    Checkpoint,
    KurrentDBClient,
    NewEvent,
    RecordedEvent,
    StreamState,
)
from kurrentdbclient.exceptions import (
    AccessDeniedError,
    BadRequestError,
    FailedPreconditionError,
    GrpcError,
    NotFoundError,
    StreamIsDeletedError,
    UnauthenticatedError,
    WrongCurrentVersionError,
)

from eventstore_client import EventStoreClient
from eventstore_client import NewEvent as OurEvent
from tests.kurrentdb.conftest import KurrentStore, start_kurrent_store
from tests.tls import Authority
from tools.processes import wait_until


@pytest.fixture
def kurrent(kurrent_store: KurrentStore) -> Iterator[KurrentDBClient]:
    client = KurrentDBClient(kurrent_store.uri)
    yield client
    client.close()


def stream(category: str = "kdb") -> str:
    return f"{category}-{uuid.uuid4()}"


def event(type: str = "Happened", data: bytes = b"{}", metadata: bytes = b"") -> NewEvent:
    return NewEvent(type=type, data=data, metadata=metadata)


def test_appends_with_each_expected_revision(kurrent: KurrentDBClient) -> None:
    name = stream()
    first = kurrent.append_to_stream(name, events=event("A"), current_version=StreamState.NO_STREAM)
    second = kurrent.append_to_stream(name, events=[event("B"), event("C")], current_version=0)
    third = kurrent.append_to_stream(name, events=event("D"), current_version=StreamState.EXISTS)
    fourth = kurrent.append_to_stream(name, events=[event("E")], current_version=StreamState.ANY)
    assert 0 < first < second < third < fourth
    recorded = kurrent.get_stream(name)
    assert [e.type for e in recorded] == ["A", "B", "C", "D", "E"]
    assert [e.stream_position for e in recorded] == [0, 1, 2, 3, 4]  # revisions are 0-based
    assert recorded[0].commit_position == first
    assert recorded[2].commit_position == second  # an append answers its last event's position
    assert kurrent.get_current_version(name) == 4
    assert kurrent.get_current_version(stream()) is StreamState.NO_STREAM


@pytest.mark.parametrize("events", [1, 2], ids=["Append", "BatchAppend"])
def test_conflicts_report_the_actual_revision_and_write_nothing(
    kurrent: KurrentDBClient, events: int
) -> None:
    """One event goes by Append, several by BatchAppend: both wires report the conflict."""
    name = stream()
    kurrent.append_to_stream(
        name, events=[event("A"), event("B")], current_version=StreamState.NO_STREAM
    )
    batch = [event("X") for _ in range(events)] if events > 1 else event("X")
    with pytest.raises(WrongCurrentVersionError) as wrong:
        kurrent.append_to_stream(name, events=batch, current_version=0)
    assert wrong.value.actual_version == 1
    with pytest.raises(WrongCurrentVersionError) as exists:
        kurrent.append_to_stream(name, events=batch, current_version=StreamState.NO_STREAM)
    assert exists.value.actual_version == 1
    missing = stream()
    with pytest.raises(WrongCurrentVersionError) as none:
        kurrent.append_to_stream(missing, events=batch, current_version=StreamState.EXISTS)
    assert none.value.actual_version is StreamState.NO_STREAM
    assert [e.type for e in kurrent.get_stream(name)] == ["A", "B"]
    with pytest.raises(NotFoundError):
        kurrent.get_stream(missing)


def test_a_retried_append_is_written_once(kurrent: KurrentDBClient) -> None:
    name = stream()
    events = [event("A"), event("B")]
    position = kurrent.append_to_stream(name, events=events, current_version=StreamState.NO_STREAM)
    again = kurrent.append_to_stream(name, events=events, current_version=StreamState.NO_STREAM)
    assert again == position
    # A retry mixed with a new event under a stale expectation: the expectation is reported,
    # as KurrentDB checks it first; nothing is written.
    with pytest.raises(WrongCurrentVersionError):
        kurrent.append_to_stream(name, events=[events[1], event("New")], current_version=0)
    single = event("C")
    kurrent.append_to_stream(name, events=single, current_version=1)
    kurrent.append_to_stream(name, events=single, current_version=1)
    assert [e.id for e in kurrent.get_stream(name)] == [events[0].id, events[1].id, single.id]


def test_events_read_back_as_written(kurrent: KurrentDBClient) -> None:
    name = stream()
    binary = bytes(range(256))
    written = [
        NewEvent(type="Json", data=b'{"n":1}', metadata=b'{"user":"ann"}'),
        NewEvent(
            type="Bytes", data=binary, metadata=binary, content_type="application/octet-stream"
        ),
        NewEvent(type="Bare", data=b""),
    ]
    before = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)
    kurrent.append_to_stream(name, events=written, current_version=StreamState.NO_STREAM)
    recorded = kurrent.get_stream(name)
    for sent, got in zip(written, recorded, strict=True):
        assert (got.id, got.type, got.data, got.metadata, got.content_type) == (
            sent.id,
            sent.type,
            sent.data,
            sent.metadata,
            sent.content_type,
        )
        assert got.stream_name == name
        assert got.recorded_at is not None and got.recorded_at > before


def test_reads_a_stream_forwards_and_backwards_from_a_revision(kurrent: KurrentDBClient) -> None:
    name = stream()
    kurrent.append_to_stream(
        name, events=[event(f"E{i}") for i in range(6)], current_version=StreamState.NO_STREAM
    )

    def types(**kwargs: object) -> list[str]:
        return [e.type for e in kurrent.get_stream(name, **kwargs)]  # type: ignore[arg-type]

    assert types(stream_position=2, limit=3) == ["E2", "E3", "E4"]
    assert types(backwards=True, limit=2) == ["E5", "E4"]
    assert types(stream_position=3, backwards=True) == ["E3", "E2", "E1", "E0"]
    assert types(stream_position=9) == []


def test_reads_all_with_filters(kurrent: KurrentDBClient) -> None:
    tag = uuid.uuid4().hex[:8]
    one, two = stream(f"alpha{tag}"), stream(f"beta{tag}")
    start = kurrent.get_commit_position() + 1
    kurrent.append_to_stream(
        one,
        events=[event(f"Opened{tag}"), event(f"Closed{tag}")],
        current_version=StreamState.NO_STREAM,
    )
    kurrent.append_to_stream(
        two, events=[event(f"Opened{tag}")], current_version=StreamState.NO_STREAM
    )
    everything = list(kurrent.read_all(commit_position=start))
    assert [(e.stream_name, e.type) for e in everything] == [
        (one, f"Opened{tag}"),
        (one, f"Closed{tag}"),
        (two, f"Opened{tag}"),
    ]
    positions = [e.commit_position for e in everything]
    assert positions == sorted(positions) and positions[0] >= start
    # From a position: that event and those after it.
    assert [e.commit_position for e in kurrent.read_all(commit_position=positions[1])] == positions[
        1:
    ]
    by_type = kurrent.read_all(commit_position=start, filter_include=[f"Opened{tag}"])
    assert [e.stream_name for e in by_type] == [one, two]
    by_prefix = kurrent.read_all(
        commit_position=start,
        filter_include=[f"beta{tag}"],
        filter_by_stream_name=True,
        filter_by_prefix=True,
    )
    assert [e.stream_name for e in by_prefix] == [two]
    by_regex = kurrent.read_all(
        commit_position=start, filter_include=[f"alpha{tag}-.*"], filter_by_stream_name=True
    )
    assert [e.type for e in by_regex] == [f"Opened{tag}", f"Closed{tag}"]
    excluded = kurrent.read_all(commit_position=start, filter_exclude=[f"Closed{tag}"])
    assert [e.type for e in excluded] == [f"Opened{tag}", f"Opened{tag}"]
    limited = kurrent.read_all(commit_position=start, filter_include=[f"Opened{tag}"], limit=1)
    assert [e.stream_name for e in limited] == [one]
    backwards = list(kurrent.read_all(backwards=True, limit=3))
    assert [e.commit_position for e in backwards] == positions[::-1]
    assert kurrent.get_commit_position() == positions[-1]


def _next_event(subscription: Iterator[object]) -> RecordedEvent:
    for item in subscription:
        if type(item) is RecordedEvent:  # Checkpoint and CaughtUp are RecordedEvents too
            return item
    raise AssertionError("the subscription ended")


def test_stream_subscription_catches_up_then_goes_live(kurrent: KurrentDBClient) -> None:
    name = stream()
    kurrent.append_to_stream(
        name, events=[event("A"), event("B")], current_version=StreamState.NO_STREAM
    )
    with (
        kurrent.subscribe_to_stream(name, timeout=30) as everything,
        kurrent.subscribe_to_stream(name, stream_position=0, timeout=30) as after_first,
    ):
        assert _next_event(everything).type == "A"
        assert _next_event(everything).type == "B"
        assert _next_event(after_first).type == "B"  # after the given revision
        kurrent.append_to_stream(name, events=event("C"), current_version=1)
        live = _next_event(everything)
        assert (live.type, live.stream_position) == ("C", 2)
        assert _next_event(after_first).type == "C"


def test_all_subscription_with_a_filter_catches_up_goes_live_and_checkpoints(
    kurrent: KurrentDBClient,
) -> None:
    tag = uuid.uuid4().hex[:8]
    start = kurrent.get_commit_position()
    name = stream(f"sub{tag}")
    kurrent.append_to_stream(
        name, events=[event(f"Wanted{tag}"), event("Other")], current_version=StreamState.NO_STREAM
    )
    with kurrent.subscribe_to_all(
        commit_position=start,
        filter_include=[f"Wanted{tag}"],
        include_checkpoints=True,
        include_caught_up=True,
        timeout=30,
    ) as subscription:
        assert _next_event(subscription).stream_position == 0
        kurrent.append_to_stream(
            name, events=[event("Other"), event(f"Wanted{tag}")], current_version=1
        )
        live = _next_event(subscription)
        assert (live.type, live.stream_position) == (f"Wanted{tag}", 3)
        # Filtered-out events still move the position the subscriber may resume from: a
        # checkpoint comes after a search window times the interval multiplier (32 x 5).
        others = [event("Other") for _ in range(200)]
        kurrent.append_to_stream(name, events=others, current_version=3)
        checkpoint = next(i for i in subscription if isinstance(i, Checkpoint))
        assert checkpoint.commit_position > live.commit_position + 160


def test_delete_hides_the_stream_and_numbering_goes_on(kurrent: KurrentDBClient) -> None:
    name = stream()
    kurrent.append_to_stream(
        name, events=[event("A"), event("B")], current_version=StreamState.NO_STREAM
    )
    with pytest.raises(WrongCurrentVersionError):
        kurrent.delete_stream(name, current_version=0)
    kurrent.delete_stream(name, current_version=1)
    with pytest.raises(NotFoundError):
        kurrent.get_stream(name)
    with pytest.raises(StreamIsDeletedError):  # a stream that must exist: deleted, it says
        kurrent.delete_stream(name, current_version=StreamState.EXISTS)
    kurrent.append_to_stream(name, events=event("C"), current_version=StreamState.ANY)
    assert [(e.type, e.stream_position) for e in kurrent.get_stream(name)] == [("C", 2)]
    with pytest.raises(NotFoundError):
        kurrent.delete_stream(stream(), current_version=0)


def test_a_soft_delete_shows_as_truncate_before_in_the_metadata(kurrent: KurrentDBClient) -> None:
    """KurrentDB writes `$tb` (the next revision) into a stream's metadata when it deletes it,
    and its clients read it there; the view of ours shows the deletion the same way, beside
    the metadata given before."""
    name, other = stream(), stream()
    for each in (name, other):
        kurrent.append_to_stream(
            each, events=[event("A"), event("B")], current_version=StreamState.NO_STREAM
        )
    kurrent.set_stream_metadata(other, metadata={"owner": "a"}, current_version=StreamState.ANY)
    for each in (name, other):
        kurrent.delete_stream(each, current_version=1)
    assert kurrent.get_stream_metadata(name)[0] == {"$tb": 2}
    assert kurrent.get_stream_metadata(other)[0] == {"owner": "a", "$tb": 2}


def test_a_tombstone_is_for_ever(kurrent: KurrentDBClient) -> None:
    name = stream()
    kurrent.append_to_stream(name, events=event("A"), current_version=StreamState.NO_STREAM)
    kurrent.tombstone_stream(name, current_version=0)
    with pytest.raises(StreamIsDeletedError):
        kurrent.get_stream(name)
    with pytest.raises(FailedPreconditionError, match="is deleted"):  # by Append
        kurrent.append_to_stream(name, events=event("B"), current_version=StreamState.ANY)
    with pytest.raises(StreamIsDeletedError):  # by BatchAppend
        kurrent.append_to_stream(name, events=[event("B"), event("C")], current_version=0)
    with pytest.raises(StreamIsDeletedError):
        kurrent.tombstone_stream(name, current_version=StreamState.ANY)


def test_stream_metadata_is_kept_and_honoured(kurrent: KurrentDBClient) -> None:
    name = stream()
    assert kurrent.get_stream_metadata(name) == ({}, StreamState.NO_STREAM)
    kurrent.append_to_stream(
        name, events=[event(f"E{i}") for i in range(5)], current_version=StreamState.NO_STREAM
    )
    kurrent.set_stream_metadata(
        name,
        metadata={"$maxCount": 3, "owner": {"team": "a"}},
        current_version=StreamState.NO_STREAM,
    )
    assert kurrent.get_stream_metadata(name) == ({"$maxCount": 3, "owner": {"team": "a"}}, 0)
    assert [e.type for e in kurrent.get_stream(name)] == ["E2", "E3", "E4"]
    with pytest.raises(WrongCurrentVersionError):
        kurrent.set_stream_metadata(name, metadata={"$tb": 4}, current_version=5)
    kurrent.set_stream_metadata(name, metadata={"$tb": 4}, current_version=0)
    assert [e.type for e in kurrent.get_stream(name)] == ["E4"]
    assert kurrent.get_stream_metadata(name) == ({"$tb": 4}, 1)
    # `$$<stream>` keeps the current metadata only, at its revision (1 here).
    metadata_stream = f"$${name}"
    assert [e.stream_position for e in kurrent.get_stream(metadata_stream)] == [1]
    assert [e.stream_position for e in kurrent.get_stream(metadata_stream, stream_position=0)] == [
        1
    ]
    assert kurrent.get_stream(metadata_stream, stream_position=0, backwards=True) == ()
    assert kurrent.get_stream(metadata_stream, stream_position=2) == ()
    with pytest.raises(GrpcError, match="whole number"):  # INVALID_ARGUMENT; nothing changed
        kurrent.set_stream_metadata(name, metadata={"$maxCount": "three"}, current_version=1)
    assert kurrent.get_stream_metadata(name) == ({"$tb": 4}, 1)


def test_max_age_hides_events_older_than_it(kurrent: KurrentDBClient) -> None:
    name = stream()
    kurrent.append_to_stream(name, events=event("Old"), current_version=StreamState.NO_STREAM)
    kurrent.set_stream_metadata(name, metadata={"$maxAge": 1})
    assert kurrent.get_stream_metadata(name)[0] == {"$maxAge": 1}
    wait_until(lambda: kurrent.get_stream(name) == (), timeout=30)  # a second after its append
    kurrent.append_to_stream(name, events=event("New"), current_version=0)
    assert [e.type for e in kurrent.get_stream(name)] == ["New"]


def test_bad_input_is_refused_and_changes_nothing(kurrent: KurrentDBClient) -> None:
    name = stream()
    with pytest.raises(GrpcError, match=r"INVALID_ARGUMENT.*type is empty"):  # by Append
        kurrent.append_to_stream(name, events=event(""), current_version=StreamState.ANY)
    with pytest.raises(BadRequestError, match="type is empty"):  # by BatchAppend
        kurrent.append_to_stream(
            name, events=[event("A"), event("")], current_version=StreamState.ANY
        )
    too_many = [event("A") for _ in range(1001)]  # one more than an append may carry
    with pytest.raises(BadRequestError, match="at most 1000 events"):
        kurrent.append_to_stream(name, events=too_many, current_version=StreamState.ANY)
    with pytest.raises(GrpcError, match="whitespace"):  # our names have none
        kurrent.append_to_stream("with space", events=event("A"), current_version=StreamState.ANY)
    with pytest.raises(NotFoundError):
        kurrent.get_stream(name)


def test_cluster_discovery_finds_this_one_node(kurrent_store: KurrentStore) -> None:
    uri = f"kurrentdb+discover://{kurrent_store.kurrentdb_address}?Tls=false"
    with KurrentDBClient(uri) as client:
        members = client.read_gossip()
        assert [(m.state, m.address) for m in members] == [("NODE_STATE_LEADER", "127.0.0.1")]
        name = stream()
        client.append_to_stream(name, events=event("A"), current_version=StreamState.NO_STREAM)
        assert client.get_current_version(name) == 0


def test_gossip_advertises_the_configured_host_and_port(new_database: Callable[[], str]) -> None:
    """Behind a Service or a proxy the name clients dial is configured (KurrentDB's
    AdvertiseHostToClientAs): discovery then sends them there, never to the listen address."""
    store = start_kurrent_store(new_database(), "--kurrentdb-advertise-host", "localhost")
    try:
        uri = f"kurrentdb+discover://{store.kurrentdb_address}?Tls=false"
        with KurrentDBClient(uri) as client:
            members = client.read_gossip()
            port = int(store.kurrentdb_address.rsplit(":", 1)[1])
            assert [(m.address, m.port) for m in members] == [("localhost", port)]
            name = stream()  # and the client, sent to localhost, works there
            client.append_to_stream(name, events=event("A"), current_version=StreamState.NO_STREAM)
            assert client.get_current_version(name) == 0
    finally:
        store.process.stop()


async def test_events_cross_between_the_ports_in_one_order(
    kurrent_store: KurrentStore, kurrent: KurrentDBClient
) -> None:
    name = stream("cross")
    async with EventStoreClient(kurrent_store.process.address) as ours:
        with kurrent.subscribe_to_stream(name, timeout=30) as followed:
            native = await ours.append(
                name, [OurEvent.json("Ours", {"n": 1}, metadata={"traceparent": "00-ab-cd-01"})]
            )
            theirs = kurrent.append_to_stream(
                name, events=event("Theirs", b"{}", b"custom"), current_version=0
            )
            assert theirs > native.position
            seen = _next_event(followed)
            assert (seen.type, seen.stream_position, seen.commit_position) == (
                "Ours",
                0,
                native.position,
            )
            assert seen.metadata == b'{"traceparent":"00-ab-cd-01"}'  # our map, as JSON
            assert _next_event(followed).type == "Theirs"
        ours_view = await ours.read_stream_list(name)
        assert [(e.type, e.version, e.position) for e in ours_view] == [
            ("Ours", 1, native.position),
            ("Theirs", 2, theirs),
        ]
        assert dict(ours_view[1].metadata) == {"kurrentdb.custom_metadata": "custom"}
        followed_by_us: list[tuple[str, int]] = []
        async for response in ours.subscribe(stream=name):
            followed_by_us += [(e.type, e.position) for e in response.events]
            if len(followed_by_us) == 2:
                break
        assert followed_by_us == [("Ours", native.position), ("Theirs", theirs)]
        all_theirs = [e.commit_position for e in kurrent.read_all(commit_position=native.position)]
        all_ours = [e.position async for e in ours.read_all(after_position=native.position - 1)]
        assert all_theirs == all_ours


@pytest.fixture(scope="module")
def secure_store(
    tmp_path_factory: pytest.TempPathFactory, new_database: Callable[[], str]
) -> Iterator[tuple[KurrentStore, str]]:
    """The KurrentDB port over TLS, with tokens: users sign in with Basic credentials."""
    directory = tmp_path_factory.mktemp("kurrent-tls")
    authority = Authority(directory)
    server = authority.server()
    tokens = directory / "tokens"
    tokens.write_text("admin s3cret-admin-token\n")
    store = start_kurrent_store(
        new_database(),
        *["--tls-cert", server.cert, "--tls-key", server.key, "--tokens-file", str(tokens)],
    )
    yield store, authority.ca
    store.process.stop()


def test_tls_with_basic_credentials(secure_store: tuple[KurrentStore, str]) -> None:
    store, ca = secure_store
    root = Path(ca).read_text()
    uri = f"kurrentdb://admin:s3cret-admin-token@{store.kurrentdb_address}?Tls=true"
    with KurrentDBClient(uri, root_certificates=root) as client:
        name = stream()
        client.append_to_stream(name, events=event("A"), current_version=StreamState.NO_STREAM)
        assert [e.type for e in client.get_stream(name)] == ["A"]
    wrong = f"kurrentdb://admin:guessed@{store.kurrentdb_address}?Tls=true"
    with (
        KurrentDBClient(wrong, root_certificates=root) as client,
        pytest.raises(UnauthenticatedError),
    ):
        client.get_stream(stream())
    # A token is its principal's password: another user name with it is refused too. (The
    # client will not connect over TLS without credentials at all.)
    other = f"kurrentdb://mallory:s3cret-admin-token@{store.kurrentdb_address}?Tls=true"
    with (
        KurrentDBClient(other, root_certificates=root) as client,
        pytest.raises(UnauthenticatedError),
    ):
        client.append_to_stream(stream(), events=event("A"), current_version=StreamState.ANY)
    with (
        KurrentDBClient(other, root_certificates=root) as client,
        pytest.raises(AccessDeniedError),  # BatchAppend answers per batch, as KurrentDB does
    ):
        client.append_to_stream(stream(), events=[event("A")], current_version=StreamState.ANY)


def test_the_readme_example(
    kurrent_store: KurrentStore, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = Path(__file__).resolve().parents[2].joinpath("README.md").read_text()
    part = readme[readme.index("## KurrentDB's protocol") :]
    start = part.index("```python\n") + len("```python\n")
    example = part[start : part.index("```", start)]
    name = stream("order")
    example = example.replace("127.0.0.1:2113", kurrent_store.kurrentdb_address)
    exec(compile(example.replace('"order-42"', repr(name)), "README.md", "exec"), {})
    assert re.fullmatch(r"0 [1-9]\d* OrderCreated b'\{\"total\": 5\}'\n", capsys.readouterr().out)
