-- What a consumer group delivers in order (eventstore.v1.GroupOrdering): 0 each stream, 1 each
-- correlation id (events without one: their stream). es_group_events.stream then holds the
-- key an event is ordered by, which for the default is its stream.
ALTER TABLE es_groups ADD COLUMN ordering smallint NOT NULL DEFAULT 0;
