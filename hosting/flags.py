"""Settings as tables: one row per setting, a flag and an environment variable for each."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping

Row = tuple[str, str, type, str]  # field, environment variable, type, help


def add_flags(
    parser: argparse.ArgumentParser, rows: Iterable[Row], env: Mapping[str, str], defaults: object
) -> None:
    """One `--field-name` flag per row, its default the variable's value when set, else the
    field's value in `defaults`."""
    for name, var, kind, text in rows:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=kind,
            default=kind(env.get(var, getattr(defaults, name))),
            help=f"{text} [${var}]",
        )
