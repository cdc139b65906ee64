"""An asyncio event loop whose time is virtual: when nothing is ready to run, the clock jumps to
the next timer instead of waiting for it.

Every coroutine of every simulated node runs on this one loop, unchanged: ``asyncio.sleep``,
``wait_for``, ``timeout`` and ``call_later`` all read :meth:`VirtualTimeLoop.time`. There is no
real I/O (the simulated network delivers by scheduling callbacks), so the selector never blocks;
work handed to an executor (``asyncio.to_thread``) runs at once, inline, taking no virtual time,
since a thread's timing would make runs irreproducible. Callbacks run in the order they were
scheduled and timers in time order (ties in scheduling order), so one seed gives one run.
CPU time is not simulated: what the nodes compute takes no virtual time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import selectors
from collections.abc import Callable, Mapping
from typing import Any


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is set, yet the loop is asked to wait: nothing can ever
    happen again in the simulation."""


class _NoIO(selectors.BaseSelector):
    """A selector over no files: ``select`` moves virtual time forward by its timeout."""

    def __init__(self, advance: Callable[[float], None]) -> None:
        self._advance = advance
        self._keys: dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return self._keys.pop(fd)

    def select(self, timeout: float | None = None) -> list:
        if timeout is None:
            raise Deadlock("every task waits and no timer is set")
        if timeout > 0:
            self._advance(timeout)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._keys

    def close(self) -> None:
        self._keys.clear()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        super().__init__(_NoIO(self._advance))

    def _advance(self, seconds: float) -> None:
        self._now += seconds

    def time(self) -> float:
        return self._now

    def _write_to_self(self) -> None:
        """Nothing ever blocks in ``select``, so there is nothing to wake."""

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future:
        future: asyncio.Future = self.create_future()
        try:
            future.set_result(func(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits, as an executor would
            future.set_exception(exc)
        return future


class InlineExecutor(concurrent.futures.Executor):
    """Runs each job at once on the caller's thread (the chain store's writes, in the simulation)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - re-raised by whoever reads the future
            future.set_exception(exc)
        return future
