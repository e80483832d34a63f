"""Stands in for ``objgraph`` (copied to ``objgraph.py`` by the runner when objgraph is not
installed): dagster-postgres's event log suite imports it to count the live event watchers after a
test, and uses nothing else from it."""

import gc


def by_type(type_name: str) -> list:
    """The objects the garbage collector tracks whose type has this name (objgraph's semantics for
    an unqualified name)."""
    return [obj for obj in gc.get_objects() if type(obj).__name__ == type_name]
