"""The README's configuration reference covers every flag and variable the server reads."""

from __future__ import annotations

from eventstore_server.config import ENVIRONMENT
from tests.support import ROOT


def test_every_server_setting_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"{flag} / {var}"
        for flag, var in ENVIRONMENT
        if f"`{flag}`" not in readme or f"`{var}`" not in readme
    ]
    assert not missing, f"undocumented settings: {missing}"


def test_the_readme_names_the_test_command() -> None:
    assert "make test" in (ROOT / "README.md").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()
