"""The events that cross services, each a message of `protos/*/v1/events.proto` with its
current version and the upcasters that read its older versions. Producers encode through these,
consumers decode through these; `tests/unit/test_event_contracts.py` holds them to each other."""
