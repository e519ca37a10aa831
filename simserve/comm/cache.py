"""Memo tables of the communication layer, owned by a run, bounded in size.

An engine issues the same collective thousands of times, so compiled schedules, their idle-network
times, `auto`'s choices and the idle time of each distinct phase are memoised. They used to sit on
the (frozen) Topology; now a `CollectiveCache` holds them. The `Communicator` of a run creates one
and binds it to its topology, so the module functions (`collective_time`, `compiled`) called with
that topology during the run use the run's cache; when the topology is garbage-collected the
binding goes with it. Each table keeps at most `max_entries` entries (least recently used dropped).
"""
from __future__ import annotations

import weakref
from collections import OrderedDict

DEFAULT_MAX_ENTRIES = 1 << 16


class BoundedMemo:
    """A dict with least-recently-used eviction beyond `max_entries`."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES):
        self.max_entries = max_entries
        self._data: OrderedDict = OrderedDict()

    def get(self, key, default=None):
        data = self._data
        if key in data:
            data.move_to_end(key)
            return data[key]
        return default

    def __setitem__(self, key, value) -> None:
        data = self._data
        data[key] = value
        data.move_to_end(key)
        if len(data) > self.max_entries:
            data.popitem(last=False)

    def __contains__(self, key) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


class CollectiveCache:
    """The communication layer's memo tables for one topology."""

    TABLES = ("compiled", "idle_time", "auto", "idle_phase", "shape", "unit_phase")

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES):
        self.max_entries = max_entries
        self.tables = {name: BoundedMemo(max_entries) for name in self.TABLES}

    def table(self, name: str) -> BoundedMemo:
        return self.tables[name]


_BOUND: dict[int, tuple[weakref.ref, CollectiveCache]] = {}


def bind(topology, cache: CollectiveCache) -> CollectiveCache:
    """Make `cache` the one the module functions use for `topology` (while it lives)."""
    key = id(topology)

    def unbind(ref, k=key):
        if _BOUND.get(k, (None,))[0] is ref:
            del _BOUND[k]

    _BOUND[key] = (weakref.ref(topology, unbind), cache)
    return cache


def cache_for(topology) -> CollectiveCache:
    """The cache bound to this topology; a new one (bound to it) if none is."""
    entry = _BOUND.get(id(topology))
    if entry is not None and entry[0]() is topology:
        return entry[1]
    return bind(topology, CollectiveCache())
