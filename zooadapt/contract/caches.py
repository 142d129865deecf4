"""Every process-wide cache zooadapt keeps, in one registry: ``clear_caches()`` empties them all.

zooadapt remembers work between loads (built skeletons, safetensors headers, digests, the
signature index, timm's names and entries, layouts, which Hub files were seen…) because a
notebook or a sweep repeats the same load many times. Hidden state is what costs a reader most,
so it lives in one kind of object with three promises: each cache has a name and a sentence
saying what its key depends on (so a reader can check the key is complete), each is bounded
(least recently used goes first), and each is registered here, so ``clear_caches()`` (notebooks,
tests, a plugin reloaded in a running process) empties every one and ``cache_info()`` lists them.

``ProcessCache`` is a bounded, thread-safe mapping; ``remembered`` keeps a function's answers
(``functools.lru_cache`` underneath, for its speed on hot paths such as compiled patterns,
registered, and keyed also by what else the answer depends on).
Plugins make theirs through ``zooadapt.plugin_api`` the same way. Pure Python: every layer uses
this module, so it sits in the contract layer and never imports torch.
"""

from __future__ import annotations

import functools
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Generic, NamedTuple, ParamSpec, TypeVar

from .errors import ZooadaptError

__all__ = ["ProcessCache", "CacheInfo", "CacheNameError", "remembered", "clear_caches", "cache_info"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
P = ParamSpec("P")
R = TypeVar("R")

_MISSING: Any = object()


class CacheNameError(ZooadaptError, ValueError):
    """Two caches were registered under one name, or a cache was given a bound it cannot keep."""


class CacheInfo(NamedTuple):
    """One cache as ``cache_info()`` lists it."""

    name: str
    size: int
    maxsize: int
    hits: int
    misses: int
    keyed_by: str
    defined_in: str


_registry: weakref.WeakSet[_Registered] = weakref.WeakSet()
"""Every live cache (a cache no module holds any more goes with it)."""
_registry_lock = threading.Lock()


def _caller(depth: int) -> tuple[str, str]:
    """(module name, source file) of the code ``depth`` frames above the caller."""
    try:
        scope = sys._getframe(depth + 1).f_globals  # noqa: SLF001
    except ValueError:  # the stack is shallower than asked
        return "?", "?"
    name = str(scope.get("__name__", "?"))
    return name, str(scope.get("__file__") or name)


class _Registered:
    """What every registered cache has: a unique name, a bound, what its key holds, where it is defined.

    ``name`` is unique among live caches: a second cache under a name already in use raises
    ``CacheNameError`` naming both modules, unless it is defined in the same source file (a
    module reloaded, or one file imported under two module names, makes one cache per import).
    """

    def __init__(self, name: str, maxsize: int, keyed_by: str, depth: int) -> None:
        if maxsize < 1:
            raise CacheNameError(f"cache {name!r}: maxsize must be at least 1, not {maxsize}; every process-wide "
                                 "cache is bounded (pass the most entries it may hold)")
        self.name = name
        self.maxsize = maxsize
        self.keyed_by = keyed_by
        self.defined_in, self._origin = _caller(depth + 1)
        with _registry_lock:
            for other in list(_registry):
                if other.name == name and other._origin != self._origin:
                    raise CacheNameError(f"a process-wide cache named {name!r} is defined in both "
                                         f"{other.defined_in} and {self.defined_in}; give one of them another name")
            _registry.add(self)

    def clear(self) -> None:
        raise NotImplementedError

    def info(self) -> CacheInfo:
        raise NotImplementedError


class ProcessCache(_Registered, Generic[K, V]):
    """A bounded mapping kept for the life of the process and emptied by ``clear_caches()``.

    ``name`` is unique among live caches (``CacheNameError`` otherwise); ``keyed_by`` says in
    one sentence what the key holds, so that a reader can check it holds everything the value
    depends on. At most ``maxsize`` entries are kept; the least recently used goes first. Safe
    to use from several threads.
    """

    def __init__(self, name: str, maxsize: int, keyed_by: str, *, _depth: int = 1) -> None:
        super().__init__(name, maxsize, keyed_by, _depth)
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, default: Any = None) -> Any:
        """The value kept for ``key`` (now the most recently used), or ``default``."""
        with self._lock:
            try:
                self._data.move_to_end(key)
            except KeyError:
                self.misses += 1
                return default
            self.hits += 1
            return self._data[key]

    def put(self, key: K, value: V) -> V:
        """Keep ``value`` for ``key`` (dropping the least recently used beyond the bound); returns it."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
        return value

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The value kept for ``key``, made with ``make()`` and kept when there is none. ``make``
        runs outside the lock (two threads may both make it; the later one is kept)."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            value = self.put(key, make())
        return value  # type: ignore[no-any-return]

    def pop(self, key: K, default: Any = None) -> Any:
        """Forget ``key`` (a file found changed, an entry made stale); returns what was kept, or ``default``."""
        with self._lock:
            return self._data.pop(key, default)

    def clear(self) -> None:
        """Forget every entry (the hit and miss counts too)."""
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        with self._lock:
            return iter(list(self._data))

    def __setitem__(self, key: K, value: V) -> None:
        self.put(key, value)

    def info(self) -> CacheInfo:
        return CacheInfo(self.name, len(self._data), self.maxsize, self.hits, self.misses, self.keyed_by,
                         self.defined_in)

    def __repr__(self) -> str:
        return f"ProcessCache({self.name!r}, {len(self._data)}/{self.maxsize} entries, keyed by {self.keyed_by})"


class _FunctionCache(_Registered):
    """The registry's record of a ``remembered`` function: its ``functools.lru_cache``."""

    def __init__(self, name: str, maxsize: int, keyed_by: str, lru: Any, depth: int) -> None:
        super().__init__(name, maxsize, keyed_by, depth + 1)
        self._lru = lru

    def clear(self) -> None:
        self._lru.cache_clear()

    def info(self) -> CacheInfo:
        stats = self._lru.cache_info()
        return CacheInfo(self.name, stats.currsize, self.maxsize, stats.hits, stats.misses, self.keyed_by,
                         self.defined_in)


def remembered(name: str, maxsize: int, keyed_by: str = "the arguments", *,
               context: Callable[[], Hashable] | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A decorator: the function's answers are kept, at most ``maxsize``, in a registered cache
    named ``name`` (least recently used goes first).

    The key is the call's arguments (hashable, compared by value) plus, when given, ``context()``
    read at each call: what else the answer depends on that the arguments do not say (timm's
    version, an environment variable). ``fn.cache_clear()`` empties it, as with ``lru_cache``;
    ``fn.process_cache`` is its entry in the registry.
    """
    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        if context is None:
            lru = functools.lru_cache(maxsize=maxsize)(function)
            wrapper: Any = lru
        else:
            def with_context(_context: Hashable, /, *args: Any, **kwargs: Any) -> R:
                return function(*args, **kwargs)

            lru = functools.lru_cache(maxsize=maxsize)(with_context)
            read = context

            @functools.wraps(function)
            def wrapper(*args: Any, **kwargs: Any) -> R:
                return lru(read(), *args, **kwargs)

            wrapper.cache_clear = lru.cache_clear
            wrapper.cache_info = lru.cache_info
        wrapper.process_cache = _FunctionCache(name, maxsize, keyed_by, lru, 1)
        return wrapper  # type: ignore[no-any-return]

    return decorate


def clear_caches() -> None:
    """Empty every process-wide cache zooadapt and its plugins keep.

    For a notebook after a plugin or a file changed under a running process, and for tests that
    must start cold. Nothing is lost but time: every cache is refilled on demand.
    """
    with _registry_lock:
        caches = list(_registry)
    for cache in caches:
        cache.clear()


def cache_info() -> tuple[CacheInfo, ...]:
    """Every live cache (name, entries, bound, hits, misses, what its key holds, where it is
    defined), by name."""
    with _registry_lock:
        caches = list(_registry)
    return tuple(sorted((c.info() for c in caches), key=lambda i: i.name))
