"""The client library for the event store: typed client, errors, and (for services) the
aggregate repository and the subscription runner."""

from eventstore_client.client import (
    AppendResult,
    EventStoreClient,
    Expected,
    NewEvent,
    Ordering,
)
from eventstore_client.errors import (
    DuplicateEventIdError,
    EventStoreError,
    InvalidArgumentError,
    NotFoundError,
    StreamDeletedError,
    UnavailableError,
    WrongExpectedVersionError,
)

__all__ = [
    "AppendResult",
    "DuplicateEventIdError",
    "EventStoreClient",
    "EventStoreError",
    "Expected",
    "InvalidArgumentError",
    "NewEvent",
    "NotFoundError",
    "Ordering",
    "StreamDeletedError",
    "UnavailableError",
    "WrongExpectedVersionError",
]
