"""Alembic's script directory for perflib's schema (run by :mod:`perflib.store.versioning`):
``env.py``, the revisions in ``versions/``, and revision 0001's frozen tables (``baseline``)."""
