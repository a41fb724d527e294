"""Numbers that Python and the store's SQL (`es_append_batch`) must agree on. The SQL cannot
import them, so `tests/unit/test_sql_seams.py` reads the function's current definition and
fails when the two differ."""

from __future__ import annotations

from enum import IntEnum


class Expectation(IntEnum):
    """An append's expectation when it is not an exact version (versions are >= 0)."""

    ANY = -1
    NO_STREAM = -2
    STREAM_EXISTS = -3

    @property
    def label(self) -> str:
        """As errors name it: "any", "no stream", "stream exists"."""
        return self.name.lower().replace("_", " ")

    @staticmethod
    def describe(expected: int) -> str:
        """An expected version (>= 0) or Expectation as errors name it."""
        return Expectation(expected).label if expected < 0 else str(expected)


class Outcome(IntEnum):
    """What `es_append_batch` answers for each append of a batch."""

    WRITTEN = 0
    DUPLICATE = 1  # a retry of an earlier append: nothing written, its version and position
    WRONG_VERSION = 2  # the version is the stream's actual one
    ID_TAKEN = 3  # an event id already used by another append
    STREAM_DELETED = 4  # the stream is tombstoned: nothing can be appended to it, ever
