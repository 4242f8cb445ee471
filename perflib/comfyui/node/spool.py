"""Job records the service has not taken yet, one JSON object a line, offered again in order.

Nothing recorded is lost: a record leaves the spool only once the service has accepted it; one
the service refuses as invalid moves to ``<spool>.rejected.jsonl`` to be looked at, so it
cannot block the records behind it. A torn last line (a crash mid-write) is skipped.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import threading
from typing import Callable

from .client import ServiceRejected

logger = logging.getLogger("perflib_estimate")
BATCH = 100


class RecordSpool:
    def __init__(self, path: pathlib.Path):
        self.path = pathlib.Path(path)
        self.rejected_path = self.path.with_name(self.path.stem + ".rejected.jsonl")
        self._lock = threading.Lock()

    def append(self, records: list[dict]) -> None:
        with self._lock:
            self._write(self.path, records, "a")

    def set_aside(self, records: list[dict]) -> None:
        """Records the service refuses: kept apart, never offered again."""
        with self._lock:
            self._write(self.rejected_path, records, "a")

    def pending(self) -> list[dict]:
        with self._lock:
            return self._read()

    def resend(self, send: Callable[[list[dict]], object]) -> int:
        """Offer the spooled records to `send` in batches; returns how many it accepted. A
        failure other than a rejection stops the resend and keeps the rest for next time."""
        with self._lock:
            records = self._read()
            accepted = 0
            try:
                while accepted < len(records):
                    batch = records[accepted:accepted + BATCH]
                    self._send_batch(batch, send)
                    accepted += len(batch)
            finally:
                if accepted:
                    self._write(self.path, records[accepted:], "w")
            return accepted

    def _send_batch(self, batch: list[dict], send: Callable[[list[dict]], object]) -> None:
        try:
            send(batch)
        except ServiceRejected:
            for record in batch:  # find the bad ones; the others are stored one by one
                try:
                    send([record])
                except ServiceRejected as exc:
                    logger.warning("perflib: the service refused job %s (%s); kept in %s",
                                   record.get("job_id"), exc, self.rejected_path)
                    self._write(self.rejected_path, [record], "a")

    def _read(self) -> list[dict]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        records = []
        for number, line in enumerate(lines, 1):
            try:
                records.append(json.loads(line))
            except ValueError:
                logger.warning("perflib: skipping unreadable line %d of %s", number, self.path)
        return records

    @staticmethod
    def _write(path: pathlib.Path, records: list[dict], mode: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if mode == "w":  # replace atomically: a crash leaves the old or the new spool
            temporary = path.with_name(path.name + ".tmp")
            with open(temporary, "w", encoding="utf-8") as out:
                out.writelines(json.dumps(r) + "\n" for r in records)
            os.replace(temporary, path)
            return
        with open(path, "a", encoding="utf-8") as out:
            out.writelines(json.dumps(r) + "\n" for r in records)
