"""``cancel_all``: a stop ends its tasks even when one of them drops a cancel."""

from __future__ import annotations

import asyncio

from spark_ml.worker.lifecycle import cancel_all


async def test_a_task_that_drops_a_cancel_is_cancelled_again_until_it_ends() -> None:
    # Given a loop that drops the first cancel it gets, as Python 3.11's wait_for does when the cancel arrives
    # with the awaited result, and a task that fails
    dropped = 0

    async def loop() -> None:
        nonlocal dropped
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if dropped:
                    raise
                dropped += 1

    async def fails() -> None:
        raise RuntimeError("boom")

    looping, failing = asyncio.create_task(loop()), asyncio.create_task(fails())
    await asyncio.sleep(0)
    # When both are cancelled
    await asyncio.wait_for(cancel_all([looping, failing]), 2)
    # Then both ended: the loop after a second cancel, the failure kept as the task's, not raised
    assert dropped == 1 and looping.cancelled()
    assert isinstance(failing.exception(), RuntimeError)


async def test_one_cancel_is_enough_for_a_task_that_takes_it() -> None:
    task = asyncio.create_task(asyncio.sleep(10))
    await asyncio.sleep(0)
    await cancel_all([task])
    assert task.cancelled()
    await cancel_all([])  # nothing to do
