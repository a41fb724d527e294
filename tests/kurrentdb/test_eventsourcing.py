"""The eventsourcing library's own test cases for recorders and applications, run through its
KurrentDB adapter (PyPI `eventsourcing-kurrentdb`) against our KurrentDB port: the way that
package's CI runs them against KurrentDB, with the same settings it gives them (KurrentDB
numbers an aggregate's first event 0, and its notification ids are positions, not contiguous).

Each test gets a store of its own on a new database: several of the cases assume an empty
store (the first notification id, "no notifications yet"), which KurrentDB's CI gets by
starting a new container.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import eventsourcing.domain
import pytest
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
    TrackingRecorder,
)

# Modules, not their classes: pytest would collect a base class imported by name, unconfigured.
from eventsourcing.tests import application, persistence
from eventsourcing.utils import Environment
from eventsourcing_kurrentdb.factory import KurrentDBFactory
from eventsourcing_kurrentdb.recorders import (
    KurrentDBAggregateRecorder,
    KurrentDBApplicationRecorder,
)
from kurrentdbclient import KurrentDBClient

from tests.kurrentdb.conftest import start_kurrent_store


@pytest.fixture
def fresh_uri(request: pytest.FixtureRequest, new_database: Callable[[], str]) -> Iterator[None]:
    """A store of the test's own, its connection string on the test case as `uri`."""
    store = start_kurrent_store(new_database())
    request.instance.uri = store.uri
    yield
    store.process.stop()


def application_recorder(client: KurrentDBClient) -> KurrentDBApplicationRecorder:
    recorder = KurrentDBApplicationRecorder(client=client)
    # The cases record UUIDs and compare what comes back with them; the adapter returns stream
    # names as text unless asked to turn them into UUIDs.
    recorder.validate_uuids = True
    return recorder


@pytest.mark.usefixtures("fresh_uri")
class TestAggregateRecorder(persistence.AggregateRecorderTestCase):
    INITIAL_VERSION = 0
    uri: str

    def setUp(self) -> None:
        self.client = KurrentDBClient(self.uri)

    def tearDown(self) -> None:
        self.client.close()

    def create_recorder(self) -> AggregateRecorder:
        return KurrentDBAggregateRecorder(client=self.client)


@pytest.mark.usefixtures("fresh_uri")
class TestApplicationRecorder(persistence.ApplicationRecorderTestCase):
    INITIAL_VERSION = 0
    EXPECT_CONTIGUOUS_NOTIFICATION_IDS = False
    uri: str

    def setUp(self) -> None:
        self.client = KurrentDBClient(self.uri)

    def tearDown(self) -> None:
        self.client.close()

    def create_recorder(self) -> ApplicationRecorder:
        return application_recorder(self.client)

    @pytest.mark.xfail(
        strict=True,
        reason="two choices of the adapter, whatever the server: max_notification_id() is 0, "
        "not None, when no event matches (get_commit_position's 0), and insert_events() "
        "answers the append's one commit position for each of its events ([2, 2], not "
        "[1, 2]); the adapter's own CI replaces this case for KurrentDB too",
    )
    def test_insert_select(self) -> None:
        super().test_insert_select()

    def test_insert_subscribe(self) -> None:
        # Optional in the library: for recorders that can subscribe, which this one can.
        self.optional_test_insert_subscribe()


@pytest.mark.usefixtures("fresh_uri")
class TestApplication(application.ExampleApplicationTestCase):
    expected_factory_topic = "eventsourcing_kurrentdb.factory:KurrentDBFactory"
    uri: str

    def setUp(self) -> None:
        self.initial_version = eventsourcing.domain.Aggregate.INITIAL_VERSION
        eventsourcing.domain.Aggregate.INITIAL_VERSION = 0
        super().setUp()
        os.environ["PERSISTENCE_MODULE"] = "eventsourcing_kurrentdb"
        os.environ["KURRENTDB_URI"] = self.uri

    def tearDown(self) -> None:
        eventsourcing.domain.Aggregate.INITIAL_VERSION = self.initial_version
        os.environ.pop("PERSISTENCE_MODULE", None)
        os.environ.pop("KURRENTDB_URI", None)
        super().tearDown()


@pytest.mark.usefixtures("fresh_uri")
class TestFactory(persistence.InfrastructureFactoryTestCase[KurrentDBFactory]):
    uri: str

    class SubApplicationRecorder(KurrentDBApplicationRecorder):
        pass

    def setUp(self) -> None:
        self.env = Environment("TestCase")
        self.env[InfrastructureFactory.PERSISTENCE_MODULE] = KurrentDBFactory.__module__
        self.env[KurrentDBFactory.KURRENTDB_URI] = self.uri
        super().setUp()

    def tearDown(self) -> None:
        os.environ.pop(KurrentDBFactory.KURRENTDB_URI, None)
        super().tearDown()

    def expected_factory_class(self) -> type[KurrentDBFactory]:
        return KurrentDBFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return KurrentDBAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return KurrentDBApplicationRecorder

    def application_recorder_subclass(self) -> type[ApplicationRecorder]:
        return self.SubApplicationRecorder

    # The adapter records no tracking or process records: the two cases that use these skip.
    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        raise NotImplementedError

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        raise NotImplementedError

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        raise NotImplementedError

    @pytest.mark.skip(reason="the adapter has no process recorder (its factory raises)")
    def test_create_process_recorder(self) -> None:
        raise AssertionError("not applicable")

    @pytest.mark.skip(reason="the adapter has no tracking recorder (its factory raises)")
    def test_create_tracking_recorder(self) -> None:
        raise AssertionError("not applicable")


@pytest.mark.usefixtures("fresh_uri")
class TestNonInterleavingNotificationIDs(persistence.NonInterleavingNotificationIDsBaseCase):
    """Two threads append 1,000 events each at once: each append's events are contiguous in
    the global order, and a read of $all after the position before them finds all 2,000.

    Without `validate_uuids` the adapter returns originator ids as stream names (text) while
    the case compares them with UUIDs, so it finds none of either originator's events and
    reports `1000 != 0` whatever the store does (seen from outside on 2026-12-07, and here
    with that line removed); with it, as for the other cases, the case holds."""

    insert_num = 1000
    uri: str

    def setUp(self) -> None:
        self.client = KurrentDBClient(self.uri)

    def tearDown(self) -> None:
        self.client.close()

    def create_recorder(self) -> ApplicationRecorder:
        recorder = application_recorder(self.client)
        # Not an empty store: the read then starts after a position, not at the start.
        recorder.insert_events(self.create_stack(self.new_originator_id())[:3])
        return recorder
