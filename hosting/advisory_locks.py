"""Every PostgreSQL advisory lock id the system takes, in one place: the store and the
services may share a database, and two uses of one id would serialise each other (or worse,
exclude each other). The store's SQL repeats WRITER; `tests/unit/test_sql_seams.py` holds the
two to each other."""

from __future__ import annotations

from enum import IntEnum


class AdvisoryLock(IntEnum):
    STORE_MIGRATIONS = 7354023980541  # the store applies its migrations under it
    STORE_WRITER = 7354023980542  # es_append_batch: one writer's batch at a time, all replicas
    STORE_SCAVENGER = 7354023980543  # one replica's scavenge round at a time
    ORDER_VIEW_SETUP = 7354023980601  # order_svc creates its read model's tables under it
    CUSTOMER_KEYS_SETUP = 7354023980602  # customer_svc creates its keys' table under it
