"""The store: schema, batched writes, spool, import — SQLite and PostgreSQL from the same code."""
from perflib.store.database import Store, UsesStore
from perflib.store.spool import Spool
from perflib.store.timestamps import parse_timestamp
from perflib.store.writer import BatchWriter, flush_all, writer_for

__all__ = ["BatchWriter", "Spool", "Store", "UsesStore", "flush_all", "parse_timestamp",
           "writer_for"]
