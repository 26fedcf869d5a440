"""Executions waiting for a replica's slots, by priority: O(1) per add, removal, membership,
highest-first pop and "how many other tenants wait", where a list scanned on every slot
reserve and release cost O(waiters) (a 10,000-execution backlog made every node's dispatch
a 10,000-step scan).

Priorities are the ten levels 0-9: one insertion-ordered dict per level is a priority queue
that keeps first come, first served among equals, with removal by identity (an execution
that ends while waiting) in O(1), which a binary heap would only give with lazy deletion.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

LEVELS = 10  # priorities 0-9

T = TypeVar("T", bound=Hashable)


class Waiters(Generic[T]):
    """Items by priority (0-9, higher first), first come first served among equals; each
    item's priority and tenant are read once, when it is added."""

    def __init__(self, priority_of: Callable[[T], int], tenant_of: Callable[[T], str]) -> None:
        self._priority_of = priority_of
        self._tenant_of = tenant_of
        self._levels: list[dict[T, None]] = [{} for _ in range(LEVELS)]
        self._where: dict[T, tuple[int, str]] = {}
        self._tenants: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, item: T) -> bool:
        return item in self._where

    def __iter__(self) -> Iterator[T]:
        """Highest priority first, the longest waiting first among equals."""
        return self.above(-1)

    def add(self, item: T) -> None:
        """Queue item (behind its equals); no change when it is already queued."""
        if item in self._where:
            return
        level = min(LEVELS - 1, max(0, self._priority_of(item)))
        tenant = self._tenant_of(item)
        self._where[item] = (level, tenant)
        self._levels[level][item] = None
        self._tenants[tenant] += 1

    def discard(self, item: T) -> None:
        where = self._where.pop(item, None)
        if where is None:
            return
        level, tenant = where
        del self._levels[level][item]
        self._tenants[tenant] -= 1
        if not self._tenants[tenant]:
            del self._tenants[tenant]

    def pop_highest(self) -> T:
        """The highest-priority item, the longest waiting among equals; IndexError if none."""
        for level in reversed(self._levels):
            if level:
                item = next(iter(level))
                self.discard(item)
                return item
        raise IndexError("no item waits")

    def above(self, priority: int) -> Iterator[T]:
        """Items of a priority higher than `priority`, highest first (only those levels are
        visited: with every execution at one priority, nothing)."""
        for level in range(LEVELS - 1, max(-1, priority), -1):
            yield from list(self._levels[level])

    def other_tenants(self, tenant: str) -> int:
        """How many tenants other than `tenant` have an item queued."""
        return len(self._tenants) - (1 if tenant in self._tenants else 0)
