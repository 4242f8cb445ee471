"""Fork safety: no database connection is in use while the process forks.

SQLite keeps each file's lock state in process memory. A child forked while a parent thread (the
job writer, the heartbeat) was inside a write transaction inherits that state without the lock
itself, and every write the child tries then waits out the busy timeout. So a fork first waits,
briefly, for the connections in use to go back to their pools, and no connection is handed out
until the fork is done. A connection held across the fork by the forking thread itself only
delays the fork by ``FORK_WAIT_S``.
"""
from __future__ import annotations

import os
import threading

import sqlalchemy as sa

FORK_WAIT_S = 5.0


class ForkGate:
    """Counts connections in use; a fork waits for none to be in use and holds new ones back."""

    def __init__(self):
        self._condition = threading.Condition()
        self._in_use = 0
        self._forking = False

    def enter(self) -> None:
        with self._condition:
            self._condition.wait_for(lambda: not self._forking)
            self._in_use += 1

    def leave(self) -> None:
        with self._condition:
            self._in_use = max(0, self._in_use - 1)
            self._condition.notify_all()

    @property
    def in_use(self) -> int:
        return self._in_use

    def before_fork(self) -> None:
        self._condition.acquire()  # held across the fork: nobody enters or leaves meanwhile
        self._forking = True
        self._condition.wait_for(lambda: self._in_use == 0, FORK_WAIT_S)

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._condition.notify_all()
        self._condition.release()


_gate = ForkGate()


def guard(engine: sa.Engine) -> None:
    """Count `engine`'s connections in use in the process's fork gate. Register it after every
    other checkout listener: one that refuses a connection must not leave it counted."""

    @sa.event.listens_for(engine, "checkout")
    def _entered(_dbapi_connection, _record, _proxy):
        _gate.enter()

    @sa.event.listens_for(engine, "checkin")
    def _left(_dbapi_connection, _record):
        _gate.leave()


def _before_fork() -> None:
    _gate.before_fork()


def _after_fork_in_parent() -> None:
    _gate.after_fork_in_parent()


def _fresh_gate_in_child() -> None:
    # The parent's connections are not the child's; the child forgets its engines anyway.
    global _gate
    _gate = ForkGate()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_fresh_gate_in_child)
