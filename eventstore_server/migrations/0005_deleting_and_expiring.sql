-- Deleting and expiring data: soft deletes and tombstones (DeleteStream), retention and custom
-- metadata (SetStreamMetadata), and what the scavenger needs to remove the rows for real.
--
-- Reads hide what is deleted or expired at once (reader.py computes each stream's visible
-- window from these columns); the scavenger (scavenger.py) removes the rows later, in bounded
-- rounds, outside the writer lock.

-- deleted_through: a soft delete hides versions up to it (the version at the delete); a later
-- append goes on from `version`. tombstoned: no append is ever accepted again.
ALTER TABLE es_streams
    ADD COLUMN deleted_through bigint  NOT NULL DEFAULT 0,
    ADD COLUMN tombstoned      boolean NOT NULL DEFAULT false;

-- Keyed by name: metadata may be set before the stream's first event (as KurrentDB allows).
CREATE TABLE es_stream_metadata (
    name            text   PRIMARY KEY,
    max_count       bigint NOT NULL,
    max_age_seconds bigint NOT NULL,
    truncate_before bigint NOT NULL,
    custom          jsonb  NOT NULL,
    version         bigint NOT NULL  -- 1 for the first metadata, +1 each change
);

-- Streams the scavenger has to look at: a delete or retention rule put them here; a stream
-- leaves once nothing of it is left to remove and no rule can make more (max_count and
-- max_age keep a stream here, as every append or every second can expire more).
CREATE TABLE es_scavenge (
    name     text        PRIMARY KEY,
    queued_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE es_scavenge_totals (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    events    bigint  NOT NULL
);
INSERT INTO es_scavenge_totals VALUES (true, 0);

-- es_append_batch as in 0002, and: an append to a tombstoned stream is refused (outcome 4,
-- stream deleted, nothing written); a soft-deleted stream with nothing appended since counts
-- as no stream for the NO_STREAM and STREAM_EXISTS expectations, while an exact expected
-- version is the stream's version, which a delete does not reset.
CREATE OR REPLACE FUNCTION es_append_batch(
    p_streams text[], p_expected bigint[], p_counts int[],
    p_event_append int[], p_event_index int[],
    p_ids uuid[], p_types text[], p_heads bytea[], p_metadata jsonb[]
) RETURNS TABLE (outcome smallint, out_version bigint, out_position bigint)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    n_appends  int := coalesce(array_length(p_streams, 1), 0);
    head       bigint;
    start_head bigint;
    names      text[];
    ids        bigint[];
    versions   bigint[];
    deleted    bigint[];
    tombs      boolean[];
    taken      uuid[];
    accepted   boolean[] := array_fill(false, ARRAY[n_appends]);
    pos_before bigint[] := array_fill(0::bigint, ARRAY[n_appends]);
    ver_before bigint[] := array_fill(0::bigint, ARRAY[n_appends]);
    slot       int[] := array_fill(0, ARRAY[n_appends]);  -- append -> index in names/ids
    outcomes   smallint[] := '{}';
    out_versions  bigint[] := '{}';
    out_positions bigint[] := '{}';
    first      int := 1;
    n          int;
    idx        int;
    current    bigint;
    gone       bigint;
    expected   bigint;
    seen       int;
    same       int;
    last_version  bigint;
    last_position bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7354023980542);
    SELECT h.position INTO head FROM es_head h;
    start_head := head;
    SELECT s.names, s.ids, s.versions, s.deleted, s.tombs, t.taken
      INTO names, ids, versions, deleted, tombs, taken
      FROM (SELECT coalesce(array_agg(name), '{}') AS names,
                   coalesce(array_agg(stream_id), '{}') AS ids,
                   coalesce(array_agg(version), '{}') AS versions,
                   coalesce(array_agg(deleted_through), '{}') AS deleted,
                   coalesce(array_agg(tombstoned), '{}') AS tombs
              FROM es_streams WHERE name = ANY (p_streams)) s,
           (SELECT coalesce(array_agg(event_id), '{}') AS taken
              FROM es_events WHERE event_id = ANY (p_ids)) t;

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
            -- A soft-deleted stream with nothing appended since is "no stream" again; its
            -- numbering goes on from where it was.
            gone := CASE WHEN idx IS NULL THEN 0 ELSE deleted[idx] END;
            expected := p_expected[i];
            IF idx IS NOT NULL AND tombs[idx] THEN
                outcomes := outcomes || 4::smallint;
                out_versions := out_versions || current;
                out_positions := out_positions || NULL::bigint;
            ELSIF (expected >= 0 AND current <> expected)
               OR (expected = -2 AND current <> gone)
               OR (expected = -3 AND current = gone) THEN
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
                    deleted := deleted || 0::bigint;
                    tombs := tombs || false;
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
        -- Data-modifying CTEs all run, referenced or not, on one snapshot: `created` gives the
        -- new streams' ids to the events; `changed` touches only streams whose version moved.
        -- es_varint is inlined only when its argument is a plain column, hence the OFFSET 0
        -- subqueries the planner may not flatten.
        WITH created AS (
            INSERT INTO es_streams (name, category, version)
                SELECT k.name, split_part(k.name, '-', 1), k.version
                  FROM unnest(names, ids, versions) AS k(name, id, version) WHERE k.id IS NULL
            RETURNING name, stream_id
        ), changed AS (
            UPDATE es_streams s SET version = k.version
              FROM unnest(ids, versions) AS k(id, version)
             WHERE k.id IS NOT NULL AND s.stream_id = k.id AND s.version <> k.version
        ), moved AS (
            UPDATE es_head SET position = head
        )
        INSERT INTO es_events (position, stream_id, version, stream, category, event_id, type,
                               metadata, record)
            SELECT x.position, x.stream_id, x.version, x.stream, x.category, x.id, x.type,
                   x.metadata, '\x0a'::bytea || es_varint(length(x.body)) || x.body
              FROM (SELECT y.*,
                           -- + version (field 3) + position (field 4) + recorded_at (field 9)
                           y.head || '\x18'::bytea || es_varint(y.version)
                                  || '\x20'::bytea || es_varint(y.position)
                                  || (SELECT '\x4a'::bytea || es_varint(length(t.ts)) || t.ts
                                        FROM (SELECT '\x08'::bytea || es_varint(u.seconds)
                                                     || '\x10'::bytea || es_varint(u.nanos) AS ts
                                                FROM (SELECT us / 1000000 AS seconds,
                                                             us % 1000000 * 1000 AS nanos
                                                        FROM (SELECT (extract(epoch FROM now())
                                                                      * 1000000)::bigint AS us) v
                                                      OFFSET 0) u
                                              OFFSET 0) t) AS body
                      FROM (SELECT pos_before[e.a] + e.j AS position,
                                   ver_before[e.a] + e.j AS version,
                                   coalesce(ids[slot[e.a]], c.stream_id) AS stream_id,
                                   p_streams[e.a] AS stream,
                                   split_part(p_streams[e.a], '-', 1) AS category,
                                   e.id, e.type, e.metadata, e.head
                              FROM unnest(p_event_append, p_event_index, p_ids, p_types, p_heads,
                                          p_metadata) AS e(a, j, id, type, head, metadata)
                              LEFT JOIN created c ON c.name = p_streams[e.a]
                             WHERE accepted[e.a]
                            OFFSET 0) y
                    OFFSET 0) x;
        -- Delivered at commit, never before: a woken reader finds the events committed.
        PERFORM pg_notify('es_events', head::text);
    END IF;
    RETURN QUERY SELECT * FROM unnest(outcomes, out_versions, out_positions);
END;
$$;
