-- Consumer groups (see eventstore_server/groups.py for how they are dispatched).
--
-- A group's whole state is here, so any store replica can serve any member and a restart of
-- every replica loses nothing: the checkpoint (every matching event at or below it is acked or
-- parked), a row per event after it that the group has touched (in flight, waiting to be
-- retried, or acked or parked out of order), parked events with their reasons, and the members
-- each replica currently serves (refreshed while they are connected, so a crashed replica's
-- members age out).

CREATE TABLE es_groups (
    name           text        PRIMARY KEY,
    category       text        NOT NULL,  -- '': every category
    event_types    text[]      NOT NULL,  -- '{}': every type
    start_after    bigint      NOT NULL,
    max_attempts   int         NOT NULL,
    ack_timeout_ms int         NOT NULL,
    checkpoint     bigint      NOT NULL,
    deliveries     bigint      NOT NULL DEFAULT 0,  -- the epoch of the latest delivery
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- state: 0 waiting (to be delivered again at or after not_before), 1 in flight (with `member`,
-- the Consume call's session, until `deadline`), 2 acked, 3 parked. Rows at or below the
-- checkpoint are deleted as it moves, except those a replay put back.
CREATE TABLE es_group_events (
    group_name text        NOT NULL REFERENCES es_groups (name) ON DELETE CASCADE,
    position   bigint      NOT NULL,
    stream     text        NOT NULL,
    state      smallint    NOT NULL,
    attempts   int         NOT NULL DEFAULT 0,
    member     uuid,
    epoch      bigint      NOT NULL DEFAULT 0,
    deadline   timestamptz,
    not_before timestamptz,
    PRIMARY KEY (group_name, position)
);

CREATE TABLE es_group_parked (
    group_name text        NOT NULL REFERENCES es_groups (name) ON DELETE CASCADE,
    position   bigint      NOT NULL,
    reason     text        NOT NULL,
    attempts   int         NOT NULL,
    parked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, position)
);

CREATE TABLE es_group_members (
    session    uuid        PRIMARY KEY,
    group_name text        NOT NULL REFERENCES es_groups (name) ON DELETE CASCADE,
    member     text        NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX es_group_members_group ON es_group_members (group_name);
