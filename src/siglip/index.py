"""Moved to `siglip.bulk.index` (search is part of the collections); `siglip.index` stays the same module object."""

import sys

from .bulk import index
from .bulk.index import AnnInfo, Hit, Index, StaleAnnError, refresh_ann  # noqa: F401 - for tools that read, not run

sys.modules[__name__] = index
