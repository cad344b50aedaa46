"""Waiting for a condition, never for a fixed time: tests poll what they observe until it holds.

The rule this module keeps: a test that depends on another process (a service, a replica, the kernel)
reads the state it needs again until the condition is met or a generous deadline passes; the deadline
only bounds a failure, it is never the expected path. On timeout the last observed value is in the
message, so a failure says what was seen instead of "timed out".
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

# Generous: the machine running the suite may be shared and slow; a passing test returns as soon as the
# condition holds, so a long deadline costs nothing there.
DEFAULT_TIMEOUT_S = 60.0
# Short enough that a met condition is noticed quickly, long enough not to busy-spin against a service.
POLL_INTERVAL_S = 0.05


def _truthy(value: object) -> bool:
    return bool(value)


def wait_for(
    what: str,
    probe: Callable[[], T],
    done: Callable[[T], bool] = _truthy,
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = POLL_INTERVAL_S,
) -> T:
    """Call `probe` until `done(value)`; return that value. Raise AssertionError naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached after {timeout:.0f}s (last seen: {value!r})")
        time.sleep(interval)


@overload
async def wait_for_async(
    what: str,
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool] = ...,
    timeout: float = ...,
    interval: float = ...,
) -> T: ...


@overload
async def wait_for_async(
    what: str,
    probe: Callable[[], T],
    done: Callable[[T], bool] = ...,
    timeout: float = ...,
    interval: float = ...,
) -> T: ...


async def wait_for_async(
    what: str,
    probe: Callable[[], Any],
    done: Callable[[Any], bool] = _truthy,
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = POLL_INTERVAL_S,
) -> Any:
    """`wait_for` inside an event loop: `probe` may be sync or async; the loop keeps running meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        value = await got if inspect.isawaitable(got) else got
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached after {timeout:.0f}s (last seen: {value!r})")
        await asyncio.sleep(interval)
