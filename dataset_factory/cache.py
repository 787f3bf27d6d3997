"""A least-recently-used cache with a size cap, for what the factory re-reads on demand.

A factory run over a big inbox meets many kept images as candidates; caching each one's
thumbnails (or row) forever grows without bound, so the oldest entries go once the cap is
reached and are read again from disk or the DB if they come back.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class BoundedCache(Generic[V]):
    """A dict-like LRU holding at most ``max_size`` units, each entry weighing ``size(value)``
    (1 by default: then ``max_size`` counts entries). An entry heavier than the cap is not kept."""

    def __init__(self, max_size: int, size: Callable[[V], int] = lambda v: 1):
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        self.max_size = max_size
        self._size = size
        self._data: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self.total = 0  # current weight of all entries

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key) -> bool:
        return key in self._data

    def __getitem__(self, key) -> V:
        value, _ = self._data[key]
        self._data.move_to_end(key)
        return value

    def get(self, key, default=None):
        return self[key] if key in self._data else default

    def __setitem__(self, key, value: V) -> None:
        self.pop(key, None)
        weight = self._size(value)
        if weight > self.max_size:
            return
        self._data[key] = (value, weight)
        self.total += weight
        while self.total > self.max_size:
            _, (_, w) = self._data.popitem(last=False)
            self.total -= w

    def pop(self, key, default=None):
        if key not in self._data:
            return default
        value, weight = self._data.pop(key)
        self.total -= weight
        return value

    def __delitem__(self, key) -> None:
        if key not in self._data:
            raise KeyError(key)
        self.pop(key)

    def clear(self) -> None:
        self._data.clear()
        self.total = 0
