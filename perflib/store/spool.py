"""Append-only JSONL spool: where job records wait while the database cannot take them.

Each process appends to its own file (``spool-<host>-<pid>.jsonl``), one record per line, flushed
and fsynced. Replaying claims a file by renaming it, so two processes never replay the same
records; a claim left by a dead process is taken over. Appends and replays take turns through an
exclusive lock on the file, and an append that finds its file claimed meanwhile starts a new one,
so even the file of a process that is still appending can be replayed without losing a line. A
process replays its own file and those of ended processes on its host; ``flush-spool`` replays
every file of its host. Writes are idempotent on ``job_id``, so a record replayed twice still
lands once.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

log = logging.getLogger(__name__)

REPLAY_BATCH = 1000
HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())  # no dots or dashes: names parse


class Spool:
    """A folder of JSONL files holding job records that are not yet in the database."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.directory / f"spool-{HOST}-{os.getpid()}.jsonl"

    def append(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Append records durably; return how many were written."""
        lines = [json.dumps(record, default=json_default) + "\n" for record in records]
        if not lines:
            return 0
        with self._lock:
            append_lines(self.path, lines)
        return len(lines)

    def pending_files(self, include_live: bool = False, other_hosts: bool = False
                      ) -> list[Path]:
        """Spool files this process may replay: its own, those of ended processes on this host,
        and claims left by ended replayers; with `include_live`, those of running processes on
        this host too; with `other_hosts`, also files named for other hosts (a folder shared
        between machines: whether their processes still run cannot be told from here)."""
        if not self.directory.is_dir():
            return []
        files = [p for p in sorted(self.directory.glob("spool-*.jsonl"))
                 if _replayable(p, include_live, other_hosts)]
        files += [p for p in sorted(self.directory.glob("spool-*.replaying-*"))
                  if not _process_alive(int(p.name.rsplit("-", 1)[1]))]
        return files

    def has_pending(self) -> bool:
        return bool(self.pending_files())

    def count_pending(self, include_live: bool = False, other_hosts: bool = False) -> int:
        return sum(_count_lines(p) for p in self.pending_files(include_live, other_hosts))

    def count_waiting(self) -> int:
        """Every record in the folder not yet in the database: spooled by any process, or
        claimed by a replay still under way."""
        if not self.directory.is_dir():
            return 0
        return sum(_count_lines(p) for p in self.directory.glob("spool-*")
                   if p.suffix != ".corrupt")

    def replay(self, write: Callable[[Sequence[dict]], Any], include_live: bool = False,
               other_hosts: bool = False) -> int:
        """Write every spooled record with `write`; return how many records were replayed.

        A file is deleted only after all its records were written; if `write` fails, the file is
        released for a later replay and the error propagates.
        """
        replayed = 0
        for path in self.pending_files(include_live, other_hosts):
            claimed = path.with_name(f"{_base_name(path)}.replaying-{os.getpid()}")
            try:
                path.rename(claimed)
            except FileNotFoundError:
                continue  # another process claimed it first
            try:
                records = _read_claimed(claimed)
                for start in range(0, len(records), REPLAY_BATCH):
                    write(records[start:start + REPLAY_BATCH])
            except BaseException:
                released = path if not path.exists() else path.with_name(
                    f"{_base_name(path)}.r{time.time_ns()}.jsonl")
                claimed.rename(released)
                raise
            claimed.unlink()
            replayed += len(records)
            log.info("replayed %d spooled job records from %s", len(records), path.name)
        return replayed


def append_lines(path: Path, lines: Sequence[str]) -> None:
    """Append whole lines durably (flushed and fsynced) under an exclusive lock on the file.

    If a replayer claimed (renamed) the file between our open and our lock, the lines go to a
    new file at `path` instead of following the claimed one into oblivion.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            if _is_at(handle, path):
                handle.writelines(lines)
                handle.flush()
                os.fsync(handle.fileno())
                return
        finally:
            handle.close()  # also releases the lock


def _is_at(handle, path: Path) -> bool:
    """True when the open file `handle` is still the file named `path`."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _read_claimed(path: Path) -> list[dict]:
    """The records of a file this process claimed, once any append in flight has finished."""
    with open(path, encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return list(_read_records(path))


def _read_records(path: Path):
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError:
                # A line cut short by a crash mid-write: keep it aside, never drop it silently.
                bad = path.with_name(_base_name(path) + ".corrupt")
                with open(bad, "a", encoding="utf-8") as out:
                    out.write(line if line.endswith("\n") else line + "\n")
                log.warning("spool %s line %d is not valid JSON; kept in %s",
                            path.name, number, bad.name)


def _base_name(path: Path) -> str:
    """``spool-host-pid`` from ``spool-host-pid.jsonl``, ``….r<ns>.jsonl`` or ``….replaying-N``."""
    return path.name.split(".", 1)[0]


def _replayable(path: Path, include_live: bool, other_hosts: bool) -> bool:
    """Our own file, one whose process on this host has ended, or (as asked) the others."""
    host, _, pid = _base_name(path).removeprefix("spool-").rpartition("-")
    if not pid.isdigit():
        return True  # not named by perflib: nobody is appending to it
    if host != HOST:
        return other_hosts
    return include_live or int(pid) == os.getpid() or not _process_alive(int(pid))


def _count_lines(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def json_default(value: Any) -> Any:
    """How a record's datetimes, NumPy scalars and anything else become JSON."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)
