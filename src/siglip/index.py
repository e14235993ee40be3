"""Moved to `siglip.bulk.index` (search is part of the collections); `siglip.index` stays the same module object."""

import sys

from .bulk import index

sys.modules[__name__] = index
