-- The store replicas that share this database, for operators (the web console's overview):
-- each replica refreshes its row with every health check; a row not refreshed for a few
-- intervals is a replica that stopped or lost its database.
CREATE TABLE es_replicas (
    replica    text        PRIMARY KEY,
    address    text        NOT NULL,  -- where it serves gRPC, as configured
    started_at timestamptz NOT NULL,
    seen_at    timestamptz NOT NULL
);
