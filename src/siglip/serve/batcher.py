"""Dynamic batching: concurrent requests' items coalesced into model batches on one executor thread.

Each tower has its own `DynamicBatcher` (a bounded queue plus one dispatcher task on the event loop). The
dispatcher takes the oldest waiting item, waits at most `max_wait_ms` for the batch to fill up to
`max_batch_size`, and hands the batch to `run_batch` on the model executor (a single thread, so the model
never runs twice at once and the event loop never blocks). While a batch runs, new items queue up, so under
load batches form without waiting. Items arrive already decoded and validated: a bad input fails at decode,
in its own request, and never reaches a batch. Should a batch fail all the same, it is split in halves and each
half run again, down to single items, so that only the items that fail on their own get the error and every
other request its right answer (one culprit in a batch of n costs about 2 log2(n) extra runs).

A request that is cancelled (client gone, deadline passed) cancels its futures; cancelled items are dropped
when the next batch is formed and no longer count towards the queue bound. `stalled()` is what `/readyz`
reads: work is pending but the worker has made no progress for `stall_timeout_s`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any

from .metrics import ServeMetrics
from .options import BatchingOptions


class QueueFullError(RuntimeError):
    """The queue cannot take the items now (bounded): the client should retry later (HTTP 503)."""


@dataclass
class _Job:
    item: Any
    future: asyncio.Future
    enqueued: float


class DynamicBatcher:
    """Coalesce items submitted by concurrent requests into batches of at most `max_batch_size`.

    `run_batch(items) -> results` (one result per item, same order; a `Backend` method) runs on `executor`.
    Keyword `changes` override single fields of `options` (e.g. `max_batch_size=16`).
    """

    def __init__(
        self,
        name: str,
        run_batch: Callable[[list[Any]], Sequence[Any]],
        executor: Executor,
        options: BatchingOptions | None = None,
        *,
        metrics: ServeMetrics | None = None,
        **changes: Any,
    ) -> None:
        options = replace(options or BatchingOptions(), **changes)
        if options.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {options.max_batch_size}")
        self.name, self.run_batch, self.executor = name, run_batch, executor
        self.max_batch_size, self.max_wait = options.max_batch_size, options.max_wait_ms / 1000.0
        self.max_queue, self.stall_timeout = options.max_queue, options.stall_timeout_s
        self.metrics = metrics
        self._queue: deque[_Job] = deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._closing = False
        self.batch_started: float | None = None  # monotonic time the running batch was handed to the executor
        self.last_progress = time.monotonic()
        if metrics is not None:
            metrics.queue_depth.set(lambda: float(self.depth()), name)

    # ---- life cycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the dispatcher on the running event loop."""
        self._arrived = asyncio.Event()
        self._closing = False
        self._task = asyncio.get_running_loop().create_task(self._dispatch(), name=f"siglip-batcher-{self.name}")

    async def stop(self) -> None:
        """Refuse new items, finish the queued ones, then end the dispatcher."""
        self._closing = True
        if self._arrived is not None:
            self._arrived.set()
        if self._task is not None:
            await self._task
            self._task = None

    # ---- submitting ---------------------------------------------------------------------------------------
    def depth(self) -> int:
        """Items waiting (not yet in a batch, not cancelled)."""
        return sum(1 for job in self._queue if not job.future.done())

    def submit(self, items: Sequence[Any]) -> list[asyncio.Future]:
        """Queue `items` (all or none); their futures resolve to the batch results."""
        if self._task is None or self._closing:
            raise QueueFullError(f"the {self.name} queue is not accepting work (server starting or stopping)")
        self._prune()
        if len(self._queue) + len(items) > self.max_queue:
            raise QueueFullError(
                f"the {self.name} queue is full ({len(self._queue)} items waiting, bound {self.max_queue})"
            )
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures = []
        for item in items:
            future = loop.create_future()
            self._queue.append(_Job(item, future, now))
            futures.append(future)
        assert self._arrived is not None
        self._arrived.set()
        return futures

    async def run(self, items: Sequence[Any]) -> list[Any]:
        """Submit `items` and wait for their results; cancelling this removes them from the queue."""
        futures = self.submit(items)
        try:
            return list(await asyncio.gather(*futures))
        finally:
            for future in futures:
                future.cancel()  # no-op for finished ones; queued ones are dropped by the dispatcher

    # ---- health ------------------------------------------------------------------------------------------
    def stalled(self) -> str | None:
        """Why the worker looks wedged (a reason for /readyz), or None while it makes progress or is idle."""
        now = time.monotonic()
        if self.batch_started is not None and now - self.batch_started > self.stall_timeout:
            return f"a {self.name} batch has been running for {now - self.batch_started:.1f}s"
        oldest = next((job.enqueued for job in self._queue if not job.future.done()), None)
        limit = self.stall_timeout + self.max_wait
        if oldest is not None and now - oldest > limit and now - self.last_progress > limit:
            return f"{self.name} items have waited {now - oldest:.1f}s with no batch started"
        if self._task is not None and self._task.done() and not self._closing:
            return f"the {self.name} dispatcher has stopped"
        return None

    # ---- the dispatcher ----------------------------------------------------------------------------------
    def _prune(self) -> None:
        if any(job.future.done() for job in self._queue):
            self._queue = deque(job for job in self._queue if not job.future.done())

    async def _dispatch(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            self._prune()
            if not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            deadline = self._queue[0].enqueued + self.max_wait
            while not self._closing and self.depth() < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take()
            if batch:
                await self._run(loop, batch)

    def _take(self) -> list[_Job]:
        batch: list[_Job] = []
        while self._queue and len(batch) < self.max_batch_size:
            job = self._queue.popleft()
            if not job.future.done():
                batch.append(job)
        return batch

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Job]) -> None:
        """Run `batch`; if it fails, run its halves, recursively, so that the error reaches only the items that
        fail alone (items cancelled meanwhile are left out of the retries)."""
        batch = [job for job in batch if not job.future.done()]
        if not batch:
            return
        self.batch_started = self.last_progress = time.monotonic()
        failure: Exception | None = None
        try:
            results = await loop.run_in_executor(self.executor, self.run_batch, [job.item for job in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name} batch gave {len(results)} results for {len(batch)} items")
        except Exception as error:
            failure = error
        else:
            for job, result in zip(batch, results):
                if not job.future.done():
                    job.future.set_result(result)
        finally:
            self.batch_started = None
            self.last_progress = time.monotonic()
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(batch), self.name)
            self.metrics.items.inc(self.name, amount=len(batch))
        if failure is None:
            return
        if len(batch) == 1:  # the culprit (or a model failure: its request gets a 500, the server lives on)
            batch[0].future.set_exception(failure)
            return
        half = len(batch) // 2
        await self._run(loop, batch[:half])
        await self._run(loop, batch[half:])
