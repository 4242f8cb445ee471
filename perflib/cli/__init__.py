"""The ``perflib`` command line."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL

from perflib.cli.analysis import analysis_commands, capacity_command
from perflib.cli.common import UsageError, database_errors, missing_extra, unreachable_errors
from perflib.cli.data import data_commands, history_commands
from perflib.cli.prediction import prediction_commands
from perflib.cli.services import comfyui_commands, serve_command
from perflib.config import ConfigError, resolve_database_url, safe_url
from perflib.store.errors import describe_error
from perflib.store.versioning import SchemaBehind


class _Parser(argparse.ArgumentParser):
    """argparse with its refusals in one line (the usage is in ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="perflib", description=__doc__)
    parser.add_argument("--database-url", default=None,
                        help="SQLAlchemy URL (default: PERFLIB_DATABASE_URL, else data/perflib.db)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--debug", action="store_true",
                        help="log at DEBUG level and show the traceback of any failure")
    commands = parser.add_subparsers(dest="command", required=True)

    data_commands(commands)
    prediction_commands(commands)
    history_commands(commands)
    analysis_commands(commands)
    capacity_command(commands)
    comfyui_commands(commands)
    serve_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # output that waited in the buffer meets a closed pipe here
    except BrokenPipeError:
        return _reader_gone()


def _reader_gone() -> int:
    """stdout's reader has gone (``perflib compare | head``): as Python's documentation
    recommends, what is left goes to devnull (so the exit does not fail again) and the command
    ends quietly with 1, as Python ends on EPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"perflib {args.command}: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        needed = missing_extra(exc, args.command)
        if needed is None:
            raise
        print(f"perflib {args.command}: {needed}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise
    except Exception as exc:
        failure = None if args.debug else _failure_line(exc, args.database_url)
        if failure is None:
            raise
        print(f"perflib {args.command}: {failure}", file=sys.stderr)
        return 1


def _failure_line(exc: Exception, database_url: str | None) -> str | None:
    """One line saying what failed, for failures fixed outside perflib (the database, a file,
    the configuration), with no password in it; None for anything else, whose traceback helps."""
    if isinstance(exc, ConfigError):
        return f"bad configuration: {exc}"
    try:
        url = resolve_database_url(database_url)
    except (ConfigError, sa.exc.ArgumentError):
        return ("bad configuration: the database URL (--database-url or PERFLIB_DATABASE_URL) "
                "is not a valid SQLAlchemy URL")
    if isinstance(exc, SchemaBehind):
        return describe_error(exc, url)
    if isinstance(exc, unreachable_errors()) or _is_database_file_error(exc, url):
        return f"cannot reach the database {safe_url(url)}: {describe_error(exc, url)}"
    if isinstance(exc, database_errors()):
        return f"the database {safe_url(url)} failed: {describe_error(exc, url)}"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    return None


def _is_database_file_error(exc: Exception, url: URL) -> bool:
    """An OSError on a SQLite database file or on a folder it should be in."""
    if not isinstance(exc, OSError) or not exc.filename or url.get_backend_name() != "sqlite" \
            or not url.database or url.database == ":memory:":
        return False
    database, failed = Path(url.database).absolute(), Path(exc.filename).absolute()
    return failed == database or failed in database.parents
