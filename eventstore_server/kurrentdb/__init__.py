"""KurrentDB's v1 client protocol on a second port (`--kurrentdb-listen`), over the same writer,
reader and tail as our own API: one group commit and one global order for both.

KurrentDB's clients bundle their own copy of the `event_store.client.*` messages, and the
protobuf runtime refuses a second copy in one process: nothing outside this package imports it,
and `eventstore_server.server` imports it only when the port is asked for.

- `mapping`: revisions, positions, ids, metadata and events between the two protocols (pure).
- `filters`: the $all filters (regular expressions and prefixes on stream names or types).
- `stream_metadata`: KurrentDB's `$$<stream>` metadata streams over our stream metadata.
- `streams`: the Streams service (Append, BatchAppend, Read, Delete, Tombstone).
- `persistent`: the PersistentSubscriptions service, over our consumer groups.
- `answers`: refusals in KurrentDB's form (status, message, `exception` trailers).
- `serve`: the second server: Streams, PersistentSubscriptions and Gossip.
"""
