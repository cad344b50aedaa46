"""Stoppers run in reverse order, and one that hangs is abandoned within its share of the grace."""

from __future__ import annotations

import asyncio

from wiretide.common.lifecycle import Lifecycle


async def test_stoppers_run_in_reverse_and_a_hanging_one_is_abandoned() -> None:
    order: list[str] = []
    lc = Lifecycle(grace_s=1.0)

    def make(name: str, hang: bool = False):  # type: ignore[no-untyped-def]
        async def stop() -> None:
            order.append(name)
            if hang:
                await asyncio.sleep(3600)

        return stop

    async def broken() -> None:
        order.append("broken")
        raise RuntimeError("boom")

    lc.on_stop("a", make("a"))
    lc.on_stop("b", make("b", hang=True))
    lc.on_stop("c", broken)
    await lc.shutdown()
    assert order == ["broken", "b", "a"]
