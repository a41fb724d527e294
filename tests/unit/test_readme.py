"""The README's configuration tables are the settings the programs read: every setting has a
row naming its flag and variable together, and every row names a setting that exists."""

from __future__ import annotations

import re

from eventstore_server.config import ENVIRONMENT
from hosting.settings import environment
from tools.processes import ROOT

README = (ROOT / "README.md").read_text()
STORE_TABLE_END = "The services (`python -m customer_svc`, `python -m order_svc`):"


def table_rows(text: str) -> list[tuple[set[str], set[str]]]:
    """(flags, variables) named in backticks in each row of the first table in `text`."""
    rows = []
    lines = text[text.index("| flag | variable |") :].splitlines()
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        flag_cell, variable_cell = line.split("|")[1:3]
        flags = set(re.findall(r"`(--[a-z0-9-]+)`", flag_cell))
        variables = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", variable_cell))
        rows.append((flags, variables))
    return rows


def undocumented(
    settings: list[tuple[str, str]], rows: list[tuple[set[str], set[str]]]
) -> list[str]:
    return [
        f"{flag} / {var}"
        for flag, var in settings
        if not any(flag in flags and var in variables for flags, variables in rows)
    ]


def test_the_store_table_documents_exactly_the_store_settings() -> None:
    store_part, _ = README.split(STORE_TABLE_END)
    rows = table_rows(store_part[store_part.index("## Configuration") :])
    assert not undocumented(ENVIRONMENT, rows), "undocumented store settings"
    flags = {flag for flag, _ in ENVIRONMENT}
    assert {f for row_flags, _ in rows for f in row_flags} == flags, "rows for flags that are gone"


def test_the_services_table_documents_exactly_the_services_settings() -> None:
    rows = table_rows(README.split(STORE_TABLE_END)[1])
    for prefix in ("CUSTOMER", "ORDER"):
        settings = environment(prefix)
        assert not undocumented(settings, rows), f"undocumented {prefix} settings"
    flags = {flag for flag, _ in environment("ORDER")}
    assert {f for row_flags, _ in rows for f in row_flags} == flags, "rows for flags that are gone"


def test_the_readme_names_the_test_command() -> None:
    assert "make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()
