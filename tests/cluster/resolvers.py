"""Merge resolvers the partition tests configure (``[backend] merge_resolver``); the
nodes import them by path, so they live in a module of their own."""

from __future__ import annotations

from thespian_cluster import Entry


def newest_claim_wins(a: Entry, b: Entry, winners: frozenset[str]) -> Entry:
    """The later registration keeps the name, whichever side won (the default rule's
    opposite for a name the majority claimed first)."""
    return a if a.registered_at >= b.registered_at else b
