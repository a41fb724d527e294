"""How the KurrentDB port answers a refusal: a status code and message, and the trailing
metadata KurrentDB sends (`exception: stream-deleted`, ...), which its clients read.

Not our ErrorInfo: KurrentDB's Python client reads any detail it does not know as a generic
error instead of mapping the status code (NotFoundError, UnauthenticatedError, ...).
"""

from __future__ import annotations

from eventstore_server.errors import StoreError, StreamDeleted
from eventstore_server.handling import Context, answering


def trailers(error: StoreError) -> tuple[tuple[str, str], ...]:
    """KurrentDB's trailing metadata for a refusal (what its .NET and Java clients map)."""
    stream = error.metadata.get("stream", "")
    if isinstance(error, StreamDeleted):
        return (("exception", "stream-deleted"), ("stream-name", stream))
    if error.reason == "WRONG_EXPECTED_VERSION":
        found = [("exception", "wrong-expected-version"), ("stream-name", stream)]
        for key in ("expected-version", "actual-version"):
            if key in error.metadata:
                found.append((key, error.metadata[key]))
        return tuple(found)
    if error.reason == "PERMISSION_DENIED":
        return (("exception", "access-denied"),)
    if error.reason == "NOT_FOUND" and stream:
        return (("exception", "stream-not-found"), ("stream-name", stream))
    return ()


async def _abort(context: Context, error: StoreError) -> None:
    await context.abort(error.code, error.message, trailers(error))


# `handling.answers` for the KurrentDB port: the same refusals, in KurrentDB's form.
kurrent_answers = answering(_abort)
