"""Moved to siglip.kernels.streams (kept for old imports)."""

from ..kernels.streams import *  # noqa: F401,F403
from ..kernels.streams import MIN_STREAM_ROWS, run_in_streams, set_cpu_streams, stream_count  # noqa: F401
