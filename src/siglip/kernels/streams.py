"""CPU inference streams: a batch split across threads that each run part of it with fewer intra-op threads.

One batch through the encoder on T intra-op threads leaves cores idle at every synchronisation point of the
thread team, and a busy neighbour (another runtime's threads, a server's decode threads) stalls the whole team.
S streams each run a contiguous part of the batch on T / S threads, concurrently (OpenVINO's THROUGHPUT hint
runs its "streams" the same way). `set_cpu_streams(n)` (or the SIGLIP_CPU_STREAMS environment variable) sets
the count: "auto" (the default: one stream per intra-op thread, as many as the batch fills with
`MIN_STREAM_ROWS` token rows each, more for towers narrower than `MIN_STREAM_WIDTH`), 1 (off), or n. Measured on the 2-core AMX Xeon of
benchmarks/results_cpu_runtimes.md, base towers at batch 32, two streams of one thread against one batch on
two threads: in the side-by-side benchmark (other runtimes loaded in the same process) on a busy host image
int8 1.23x, image bf16 1.06x, text int8 1.09x, text bf16 1.08x; on a quiet host bf16 1.02-1.04x and int8
0.97-0.99x; alone in a process (10 interleaved rounds) text int8 1.19x, text bf16 1.00x, image 0.99x.
Narrow towers have too little GEMM work per row for streams to pay: at batch 16 (3136 rows), widths 64 and 192,
one batch on two threads ran int8 1.1-1.5x and fp32 up to 1.14x faster than two streams (AMX, and capped to
AVX2); from width 256 up two streams were as fast or faster (fp32 1.08-1.12x).

Each stream gets whole sequences: fp32 and static int8 results are identical to one batch; in bf16 a GEMM may
block its rows differently for another row count, as with any change of batch size (differences at bf16
rounding); dynamic int8 takes its per-tensor scale over each part instead of the whole batch.

Used by `SiglipEncoder` for inference only: CPU tensors, no autograd recording, no autocast, not while
torch.compile traces, not in training mode, not for SigLIP2's packed sequences.
"""

from __future__ import annotations

import os
import queue
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import torch

from ..errors import InputError

# A stream needs this many token rows (batch x tokens) to pay for itself: ~5 images at 224 px or 16 texts;
# a tower narrower than MIN_STREAM_WIDTH needs (MIN_STREAM_WIDTH / width)^2 times as many (same GEMM work per row).
MIN_STREAM_ROWS = 1024
MIN_STREAM_WIDTH = 256

_setting: int | None = None  # None: "auto"


def _parse(value: str | int | None) -> int | None:
    if value is None or value == "auto":
        return None
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not text.isdigit() or int(text) < 1:
        raise InputError(f"CPU streams must be 'auto' or a positive integer, got {value!r}")
    return int(text)


def set_cpu_streams(value: str | int | None = "auto") -> None:
    """How many concurrent streams CPU inference splits a batch into: "auto" (or None, the default), 1 (off),
    or n (see the module's docstring)."""
    global _setting
    _setting = _parse(value)


try:
    _setting = _parse(os.environ.get("SIGLIP_CPU_STREAMS", "auto"))
except InputError as error:
    warnings.warn(f"SIGLIP_CPU_STREAMS ignored: {error}", stacklevel=1)


def stream_count(hidden_states: torch.Tensor, training: bool) -> int:
    """The number of streams this encoder call should use (1: run it as one batch)."""
    if _setting == 1 or training or hidden_states.device.type != "cpu" or torch.is_grad_enabled():
        return 1
    if torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu"):
        return 1
    batch = hidden_states.shape[0]
    threads = torch.get_num_threads()
    wanted = threads if _setting is None else _setting
    width = hidden_states.shape[-1]
    rows_per_stream = MIN_STREAM_ROWS * max(1.0, (MIN_STREAM_WIDTH / max(width, 1)) ** 2)
    by_rows = int(hidden_states.numel() // width // rows_per_stream)
    return max(1, min(wanted, batch, by_rows if _setting is None else batch))


class _StreamPool:
    """`count` worker threads, each set to `threads` intra-op threads, that run one callable at a time."""

    def __init__(self, count: int, threads: int) -> None:
        self.jobs: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(count)]
        ready = threading.Barrier(count + 1)
        saved = torch.get_num_threads()
        for jobs in self.jobs:
            worker = threading.Thread(target=self._work, args=(jobs, threads, ready), daemon=True)
            worker.name = "siglip-cpu-stream"
            worker.start()
        ready.wait()
        # torch.set_num_threads in a worker also changes the default that threads started later inherit;
        # each worker has fixed its own count by now, so restore the process default.
        torch.set_num_threads(saved)

    @staticmethod
    def _work(jobs: queue.SimpleQueue, threads: int, ready: threading.Barrier) -> None:
        torch.set_num_threads(threads)
        torch.ones(1 << 16).sum()  # the first parallel op fixes this thread's intra-op thread count
        ready.wait()
        while True:
            function, future = jobs.get()
            try:
                future.set_result(function())
            except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
                future.set_exception(error)

    def run(self, functions: Sequence[Callable[[], Any]]) -> list[Any]:
        futures = []
        for jobs, function in zip(self.jobs, functions):
            future: Future = Future()
            jobs.put((function, future))
            futures.append(future)
        return [future.result() for future in futures]


_POOLS: dict[tuple[int, int], _StreamPool] = {}
_POOLS_LOCK = threading.Lock()
os.register_at_fork(after_in_child=_POOLS.clear)


def _pool(count: int) -> _StreamPool:
    threads = max(1, torch.get_num_threads() // count)
    with _POOLS_LOCK:
        key = (count, threads)
        if key not in _POOLS:
            _POOLS[key] = _StreamPool(count, threads)
        return _POOLS[key]


def run_in_streams(count: int, function: Callable[..., Any], batch: int, *arguments: Any) -> list[Any]:
    """`function(*parts)` for `count` contiguous parts of the batch, concurrently; the results in order.

    Tensor arguments whose first dimension is `batch` are split, everything else is passed whole. Each stream
    runs in the caller's inference / no-grad mode."""
    bounds = [round(batch * i / count) for i in range(count + 1)]
    inference = torch.is_inference_mode_enabled()

    def part(start: int, stop: int) -> Callable[[], Any]:
        sliced = [
            a[start:stop] if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == batch else a for a in arguments
        ]

        def call() -> Any:
            with torch.inference_mode(inference), torch.no_grad():
                return function(*sliced)

        return call

    return _pool(count).run([part(start, stop) for start, stop in zip(bounds[:-1], bounds[1:])])
