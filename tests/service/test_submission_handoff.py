"""The hand-off of durable answers from the writer thread to the event loop."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

import pytest
from leadtrail.server.submission import Handoff

WAIT_S = 20.0


class CountingLoop:
    """Counts the wake-ups asked of a running loop from other threads."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.wakeups = 0
        self._real = loop.call_soon_threadsafe

        def counted(callback: Any, *args: Any, **kwargs: Any) -> Any:
            self.wakeups += 1
            return self._real(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]


def test_the_answers_of_one_group_wake_the_loop_once() -> None:
    async def main() -> tuple[list[Any], int]:
        loop = asyncio.get_running_loop()
        counter = CountingLoop(loop)
        handoff = Handoff(loop)
        durables: list[Future[Any]] = [Future() for _ in range(16)]
        answers = [handoff.watch(d) for d in durables]

        def commit() -> None:  # as the writer resolves one group
            for k, durable in enumerate(durables):
                assert durable.set_running_or_notify_cancel()
                durable.set_result([k])

        writer = threading.Thread(target=commit)
        writer.start()
        writer.join(WAIT_S)  # the loop is held here: every answer joins the first one's delivery
        assert not writer.is_alive()
        results = await asyncio.wait_for(asyncio.gather(*answers), WAIT_S)
        return results, counter.wakeups

    results, wakeups = asyncio.run(main())
    assert results == [[k] for k in range(16)]
    assert wakeups == 1


def test_answers_resolved_apart_are_each_delivered() -> None:
    async def main() -> list[Any]:
        handoff = Handoff(asyncio.get_running_loop())
        got = []
        for k in range(3):
            durable: Future[Any] = Future()
            answer = handoff.watch(durable)
            threading.Thread(target=durable.set_result, args=(k,)).start()
            got.append(await asyncio.wait_for(answer, WAIT_S))
        return got

    assert asyncio.run(main()) == [0, 1, 2]


def test_a_failed_commit_reaches_the_awaiting_call() -> None:
    async def main() -> None:
        handoff = Handoff(asyncio.get_running_loop())
        durable: Future[Any] = Future()
        answer = handoff.watch(durable)
        threading.Thread(target=durable.set_exception, args=(OSError(5, "disk gone"),)).start()
        await asyncio.wait_for(answer, WAIT_S)

    with pytest.raises(OSError, match="disk gone"):
        asyncio.run(main())


def test_a_call_that_gives_up_cancels_its_queued_batch() -> None:
    async def main() -> Future[Any]:
        handoff = Handoff(asyncio.get_running_loop())
        durable: Future[Any] = Future()
        answer = handoff.watch(durable)
        answer.cancel()
        await asyncio.sleep(0)  # the done callbacks of ``answer`` run on the next loop turn
        return durable

    assert asyncio.run(main()).cancelled()


def test_an_answer_already_durable_is_delivered() -> None:
    async def main() -> Any:
        durable: Future[Any] = Future()
        durable.set_result("done")
        return await asyncio.wait_for(Handoff(asyncio.get_running_loop()).watch(durable), WAIT_S)

    assert asyncio.run(main()) == "done"
