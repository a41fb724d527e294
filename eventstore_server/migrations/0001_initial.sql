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
-- Subscribe) need no join; events are immutable, so the copies cannot drift.
CREATE TABLE es_events (
    position     bigint      PRIMARY KEY,
    stream_id    bigint      NOT NULL REFERENCES es_streams,
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
-- -2: no stream; -3: stream exists) and owns the next p_counts[i] entries of the event arrays.
-- Each append is checked on its own; a refused one writes nothing and does not affect the
-- others. One row per append, in order: outcome 0 written, 1 duplicate of an earlier append
-- (nothing written; its version and position), 2 wrong expected version (version = actual),
-- 3 an event id already used elsewhere.
--
-- Why a transaction-level advisory lock: PostgreSQL commits transactions in any order, so a
-- reader following positions could pass a position whose transaction commits later and miss it
-- for ever. With one writer at a time across all replicas, positions are handed out in commit
-- order and a reader that has seen position P has seen every event below P.
CREATE FUNCTION es_append_batch(
    p_streams text[], p_categories text[], p_expected bigint[], p_counts int[],
    p_ids uuid[], p_types text[], p_data bytea[], p_metadata jsonb[], p_content_types text[]
) RETURNS TABLE (outcome smallint, out_version bigint, out_position bigint)
LANGUAGE plpgsql AS $$
DECLARE
    head      bigint;
    start_head bigint;
    first     int := 1;
    n         int;
    sid       bigint;
    current   bigint;
    expected  bigint;
    ids       uuid[];
    seen      int;
    same      int;
    last_version  bigint;
    last_position bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7354023980542);
    SELECT h.position INTO head FROM es_head h FOR UPDATE;
    start_head := head;
    FOR i IN 1 .. coalesce(array_length(p_streams, 1), 0) LOOP
        n := p_counts[i];
        ids := p_ids[first : first + n - 1];
        SELECT count(*), count(*) FILTER (WHERE e.stream = p_streams[i]), max(e.version), max(e.position)
          INTO seen, same, last_version, last_position
          FROM es_events e WHERE e.event_id = ANY (ids);
        IF seen > 0 THEN
            IF seen = n AND same = n THEN
                outcome := 1; out_version := last_version; out_position := last_position;
            ELSE
                outcome := 3; out_version := NULL; out_position := NULL;
            END IF;
            RETURN NEXT;
            first := first + n;
            CONTINUE;
        END IF;

        SELECT s.stream_id, s.version INTO sid, current FROM es_streams s WHERE s.name = p_streams[i];
        IF NOT FOUND THEN
            sid := NULL;
            current := 0;
        END IF;
        expected := p_expected[i];
        IF (expected >= 0 AND current <> expected)
           OR (expected = -2 AND current <> 0)
           OR (expected = -3 AND current = 0) THEN
            outcome := 2; out_version := current; out_position := NULL;
            RETURN NEXT;
            first := first + n;
            CONTINUE;
        END IF;

        IF sid IS NULL THEN
            INSERT INTO es_streams (name, category, version)
                VALUES (p_streams[i], p_categories[i], n) RETURNING stream_id INTO sid;
        ELSE
            UPDATE es_streams SET version = current + n WHERE stream_id = sid;
        END IF;
        INSERT INTO es_events (position, stream_id, version, stream, category, event_id, type, data,
                               metadata, content_type)
            SELECT head + t.k, sid, current + t.k, p_streams[i], p_categories[i], t.id, t.type,
                   t.data, t.metadata, t.content_type
              FROM unnest(ids, p_types[first : first + n - 1], p_data[first : first + n - 1],
                          p_metadata[first : first + n - 1], p_content_types[first : first + n - 1])
                   WITH ORDINALITY AS t(id, type, data, metadata, content_type, k);
        head := head + n;
        outcome := 0; out_version := current + n; out_position := head;
        RETURN NEXT;
        first := first + n;
    END LOOP;
    IF head > start_head THEN
        UPDATE es_head SET position = head;
        -- Delivered at commit, never before: a woken reader finds the events committed.
        PERFORM pg_notify('es_events', head::text);
    END IF;
END;
$$;
