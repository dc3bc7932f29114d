"""Persistence: one repository protocol, SQLite (default, embedded) and PostgreSQL."""

from margin_engine.store.base import Repository, open_store

__all__ = ["Repository", "open_store"]
