from __future__ import annotations

import pytest

from eventstore_server.config import parse
from hosting.settings import parse_settings


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


def test_service_flags_override_environment_which_overrides_defaults() -> None:
    env = {"ORDER_LISTEN": "0.0.0.0:1", "SNAPSHOT_EVERY": "7", "CUSTOMER_SHUTDOWN_GRACE": "99"}
    settings = parse_settings("order_svc", "ORDER", "127.0.0.1:50053", ["--eventstore", "e:1"], env)
    assert (settings.listen, settings.eventstore, settings.snapshot_every) == (
        "0.0.0.0:1",
        "e:1",
        7,
    )
    assert settings.shutdown_grace == 10.0  # another service's variable is not ours
    assert settings.tls is None and not settings.eventstore_security.tls


def test_service_tls_needs_both_halves() -> None:
    with pytest.raises(SystemExit):
        parse_settings("svc", "ORDER", "127.0.0.1:1", ["--tls-cert", "cert.pem"], {})
