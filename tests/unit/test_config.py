from __future__ import annotations

import pytest

from eventstore_server.config import parse


def test_flags_override_environment_which_overrides_defaults() -> None:
    env = {
        "DATABASE_URL": "postgresql://env/db",
        "EVENTSTORE_LISTEN": "0.0.0.0:1",
        "EVENTSTORE_MAX_EVENT_SIZE": "5",
    }
    settings = parse(["--listen", "127.0.0.1:2"], env)
    assert settings.listen == "127.0.0.1:2"
    assert settings.database_url == "postgresql://env/db"
    assert settings.limits.max_event_size == 5
    assert settings.pool_size == 10


def test_database_is_required() -> None:
    with pytest.raises(SystemExit):
        parse([], {})
