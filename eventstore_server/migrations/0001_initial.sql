-- The event store's tables and its batch-append function.

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

-- The stream name and category are copied into each event so reads in global order (ReadAll,
-- Subscribe) need no join; events are immutable, so the copies cannot drift. stream_id has no
-- foreign key: only es_append_batch writes here, and it creates the stream row first; a key
-- would cost a lookup per event on the hot path.
CREATE TABLE es_events (
    position     bigint      PRIMARY KEY,
    stream_id    bigint      NOT NULL,
    version      bigint      NOT NULL,
    stream       text        NOT NULL,
    category     text        NOT NULL,
    event_id     uuid        NOT NULL UNIQUE,
    type         text        NOT NULL,
    data         bytea       NOT NULL,
    metadata     jsonb       NOT NULL,
    content_type text        NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, version)
);
CREATE INDEX es_events_category ON es_events (category, position);

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
    p_ids uuid[], p_types text[], p_data bytea[], p_metadata jsonb[], p_content_types text[]
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
                ELSE
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
        INSERT INTO es_streams (name, category, version)
            SELECT k.name, split_part(k.name, '-', 1), k.version
              FROM unnest(names, ids, versions) AS k(name, id, version) WHERE k.id IS NULL;
        UPDATE es_streams s SET version = k.version
          FROM unnest(ids, versions) AS k(id, version)
         WHERE k.id IS NOT NULL AND s.stream_id = k.id AND s.version <> k.version;
        INSERT INTO es_events (position, stream_id, version, stream, category, event_id, type,
                               data, metadata, content_type)
            SELECT pos_before[e.a] + e.j, s.stream_id, ver_before[e.a] + e.j, s.name, s.category,
                   e.id, e.type, e.data, e.metadata, e.content_type
              FROM unnest(p_event_append, p_event_index, p_ids, p_types, p_data, p_metadata,
                          p_content_types) AS e(a, j, id, type, data, metadata, content_type)
              JOIN es_streams s ON s.name = p_streams[e.a]
             WHERE accepted[e.a];
        UPDATE es_head SET position = head;
        -- Delivered at commit, never before: a woken reader finds the events committed.
        PERFORM pg_notify('es_events', head::text);
    END IF;
    RETURN QUERY SELECT * FROM unnest(outcomes, out_versions, out_positions);
END;
$$;
