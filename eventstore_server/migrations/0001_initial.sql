-- The event store's tables and its batch-append function.
--
-- es_append_batch below is its FIRST version, kept as it was applied. The version that runs
-- now is the last migration that redefines it (0002_leaner_append_batch.sql at the time of
-- writing: `grep -l "FUNCTION es_append_batch" eventstore_server/migrations/*.sql | tail -1`).
-- The numbers it shares with Python (outcome and expectation codes, the writer lock id,
-- protobuf field numbers) are pinned by tests/unit/test_sql_seams.py.

-- The global head: the position of the last committed event. Updated only by the writer while it
-- holds the writer lock, so positions are gap-free and increase in commit order.
CREATE TABLE es_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    position  bigint  NOT NULL
);
INSERT INTO es_head VALUES (true, 0);

CREATE TABLE es_streams (
    stream_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name      text   NOT NULL UNIQUE,
    category  text   NOT NULL,
    version   bigint NOT NULL
);

-- `record` is the event exactly as it goes on the wire: a RecordedEvent in protobuf encoding,
-- framed as field 1 of the read responses (tag, length, message). A page of events is then the
-- concatenation of its records, which is the encoding of a ReadStreamResponse, ReadAllResponse
-- or SubscribeResponse: reads build no message per event, in PostgreSQL or in Python. The data
-- is stored once, inside the record; the columns beside it are what queries filter on, and
-- metadata as jsonb for operators (find the events of a trace, say).
--
-- The stream name and category are copied into each event so reads in global order need no
-- join; events are immutable, so the copies cannot drift. stream_id has no foreign key: only
-- es_append_batch writes here, and it creates the stream row first; a key would cost a lookup
-- per event on the hot path.
CREATE TABLE es_events (
    position     bigint      PRIMARY KEY,
    stream_id    bigint      NOT NULL,
    version      bigint      NOT NULL,
    stream       text        NOT NULL,
    category     text        NOT NULL,
    event_id     uuid        NOT NULL UNIQUE,
    type         text        NOT NULL,
    metadata     jsonb       NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    record       bytea       NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE INDEX es_events_category ON es_events (category, position);

-- Protobuf's base-128 varint of v, for 0 <= v < 2^56 (positions, versions, timestamps). Plain
-- SQL and not STRICT (a strict CASE body defeats inlining), so the planner inlines it into the
-- INSERT: no function call per event.
CREATE FUNCTION es_varint(v bigint) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT substring(int8send(
          ((((v      ) & 127) | CASE WHEN v >= 128 THEN 128 ELSE 0 END) << 56)
        | ((((v >>  7) & 127) | CASE WHEN v >= 16384 THEN 128 ELSE 0 END) << 48)
        | ((((v >> 14) & 127) | CASE WHEN v >= 2097152 THEN 128 ELSE 0 END) << 40)
        | ((((v >> 21) & 127) | CASE WHEN v >= 268435456 THEN 128 ELSE 0 END) << 32)
        | ((((v >> 28) & 127) | CASE WHEN v >= 34359738368 THEN 128 ELSE 0 END) << 24)
        | ((((v >> 35) & 127) | CASE WHEN v >= 4398046511104 THEN 128 ELSE 0 END) << 16)
        | ((((v >> 42) & 127) | CASE WHEN v >= 562949953421312 THEN 128 ELSE 0 END) << 8)
        | ((v >> 49) & 127)
    ) FROM 1 FOR CASE
        WHEN v < 128 THEN 1 WHEN v < 16384 THEN 2 WHEN v < 2097152 THEN 3
        WHEN v < 268435456 THEN 4 WHEN v < 34359738368 THEN 5 WHEN v < 4398046511104 THEN 6
        WHEN v < 562949953421312 THEN 7 ELSE 8 END)
$$;

CREATE TABLE es_snapshots (
    stream_id   bigint      NOT NULL REFERENCES es_streams,
    version     bigint      NOT NULL,
    type        text        NOT NULL,
    data        bytea       NOT NULL,
    metadata    jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, version)
);

CREATE TABLE es_checkpoints (
    subscriber text        PRIMARY KEY,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Appends a batch of independent appends in one transaction (one round trip, one fsync).
--
-- Append i targets p_streams[i] with expectation p_expected[i] (>= 0: exact version; -1: any;
-- -2: no stream; -3: stream exists) and owns p_counts[i] consecutive entries of the event
-- arrays; p_event_append / p_event_index give each event's append and its 1-based place in it.
-- p_heads holds each event's RecordedEvent fields that the client decides (id, stream, type,
-- data, metadata, content_type), already encoded; version, position and recorded_at are added
-- here, where they are decided.
-- Each append is checked on its own; a refused one writes nothing and does not affect the
-- others. One row per append, in order: outcome 0 written, 1 duplicate of an earlier append
-- (nothing written; its version and position), 2 wrong expected version (version = actual),
-- 3 an event id already used elsewhere.
--
-- Why a transaction-level advisory lock: PostgreSQL commits transactions in any order, so a
-- reader following positions could pass a position whose transaction commits later and miss it
-- for ever. With one writer at a time across all replicas, positions are handed out in commit
-- order and a reader that has seen position P has seen every event below P.
--
-- The work is set-based: a fixed handful of statements per batch, whatever its size; the loop
-- over appends only does arithmetic on arrays. Two appends of one batch sharing an event id
-- make the final INSERT fail; the writer then retries the batch's appends one by one.
CREATE FUNCTION es_append_batch(
    p_streams text[], p_expected bigint[], p_counts int[],
    p_event_append int[], p_event_index int[],
    p_ids uuid[], p_types text[], p_heads bytea[], p_metadata jsonb[]
) RETURNS TABLE (outcome smallint, out_version bigint, out_position bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n_appends  int := coalesce(array_length(p_streams, 1), 0);
    head       bigint;
    start_head bigint;
    names      text[];
    ids        bigint[];
    versions   bigint[];
    taken      uuid[];
    accepted   boolean[] := array_fill(false, ARRAY[n_appends]);
    pos_before bigint[] := array_fill(0::bigint, ARRAY[n_appends]);
    ver_before bigint[] := array_fill(0::bigint, ARRAY[n_appends]);
    slot       int[] := array_fill(0, ARRAY[n_appends]);  -- append -> index in names/ids
    sids       bigint[];
    cats       text[];
    created    record;
    outcomes   smallint[] := '{}';
    out_versions  bigint[] := '{}';
    out_positions bigint[] := '{}';
    first      int := 1;
    n          int;
    idx        int;
    current    bigint;
    expected   bigint;
    seen       int;
    same       int;
    last_version  bigint;
    last_position bigint;
    now_us     bigint := (extract(epoch FROM now()) * 1000000)::bigint;
    stamp      bytea;
BEGIN
    PERFORM pg_advisory_xact_lock(7354023980542);
    SELECT h.position INTO head FROM es_head h;
    start_head := head;
    SELECT coalesce(array_agg(s.name), '{}'), coalesce(array_agg(s.stream_id), '{}'),
           coalesce(array_agg(s.version), '{}')
      INTO names, ids, versions
      FROM es_streams s WHERE s.name = ANY (p_streams);
    SELECT coalesce(array_agg(e.event_id), '{}') INTO taken
      FROM es_events e WHERE e.event_id = ANY (p_ids);

    FOR i IN 1 .. n_appends LOOP
        n := p_counts[i];
        IF cardinality(taken) > 0 AND p_ids[first : first + n - 1] && taken THEN
            -- Some ids exist: a retry of an earlier append (all ids, same stream) or a clash.
            SELECT count(*), count(*) FILTER (WHERE e.stream = p_streams[i]),
                   max(e.version), max(e.position)
              INTO seen, same, last_version, last_position
              FROM es_events e WHERE e.event_id = ANY (p_ids[first : first + n - 1]);
            IF seen = n AND same = n THEN
                outcomes := outcomes || 1::smallint;
                out_versions := out_versions || last_version;
                out_positions := out_positions || last_position;
            ELSE
                outcomes := outcomes || 3::smallint;
                out_versions := out_versions || NULL::bigint;
                out_positions := out_positions || NULL::bigint;
            END IF;
        ELSE
            idx := array_position(names, p_streams[i]);
            current := CASE WHEN idx IS NULL THEN 0 ELSE versions[idx] END;
            expected := p_expected[i];
            IF (expected >= 0 AND current <> expected)
               OR (expected = -2 AND current <> 0)
               OR (expected = -3 AND current = 0) THEN
                outcomes := outcomes || 2::smallint;
                out_versions := out_versions || current;
                out_positions := out_positions || NULL::bigint;
            ELSE
                accepted[i] := true;
                pos_before[i] := head;
                ver_before[i] := current;
                head := head + n;
                IF idx IS NULL THEN
                    names := names || p_streams[i];
                    ids := ids || NULL::bigint;
                    versions := versions || (current + n);
                    slot[i] := cardinality(names);
                ELSE
                    slot[i] := idx;
                    versions[idx] := current + n;
                END IF;
                outcomes := outcomes || 0::smallint;
                out_versions := out_versions || (current + n);
                out_positions := out_positions || head;
            END IF;
        END IF;
        first := first + n;
    END LOOP;

    IF head > start_head THEN
        -- recorded_at as a google.protobuf.Timestamp (seconds = 1, nanos = 2), field 9.
        stamp := '\x08'::bytea || es_varint(now_us / 1000000)
                 || '\x10'::bytea || es_varint((now_us % 1000000) * 1000);
        stamp := '\x4a'::bytea || es_varint(length(stamp)) || stamp;
        FOR created IN
            INSERT INTO es_streams (name, category, version)
                SELECT k.name, split_part(k.name, '-', 1), k.version
                  FROM unnest(names, ids, versions) AS k(name, id, version) WHERE k.id IS NULL
            RETURNING name, stream_id
        LOOP
            ids[array_position(names, created.name)] := created.stream_id;
        END LOOP;
        UPDATE es_streams s SET version = k.version
          FROM unnest(ids, versions) AS k(id, version)
         WHERE k.id IS NOT NULL AND s.stream_id = k.id AND s.version <> k.version;
        -- Each append's stream id and category, so events need no lookup of their stream.
        SELECT array_agg(CASE WHEN slot[i] > 0 THEN ids[slot[i]] END ORDER BY i),
               array_agg(split_part(p_streams[i], '-', 1) ORDER BY i)
          INTO sids, cats
          FROM generate_series(1, n_appends) AS i;
        -- es_varint is inlined only when its argument is a plain column: the positions and
        -- versions are computed in a subquery the planner may not flatten (OFFSET 0).
        INSERT INTO es_events (position, stream_id, version, stream, category, event_id, type,
                               metadata, record)
            SELECT x.position, x.stream_id, x.version, x.stream, x.category, x.id, x.type,
                   x.metadata, '\x0a'::bytea || es_varint(length(x.body)) || x.body
              FROM (SELECT y.*,
                           -- + version (field 3) + position (field 4) + recorded_at (field 9)
                           y.head || '\x18'::bytea || es_varint(y.version)
                                  || '\x20'::bytea || es_varint(y.position) || stamp AS body
                      FROM (SELECT pos_before[e.a] + e.j AS position, ver_before[e.a] + e.j AS version,
                                   sids[e.a] AS stream_id, p_streams[e.a] AS stream,
                                   cats[e.a] AS category, e.id, e.type, e.metadata, e.head
                              FROM unnest(p_event_append, p_event_index, p_ids, p_types, p_heads,
                                          p_metadata) AS e(a, j, id, type, head, metadata)
                             WHERE accepted[e.a]
                            OFFSET 0) y
                    OFFSET 0) x;
        UPDATE es_head SET position = head;
        -- Delivered at commit, never before: a woken reader finds the events committed.
        PERFORM pg_notify('es_events', head::text);
    END IF;
    RETURN QUERY SELECT * FROM unnest(outcomes, out_versions, out_positions);
END;
$$;
