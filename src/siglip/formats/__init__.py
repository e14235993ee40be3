"""Writing checkpoints in other formats: `siglip convert` (formats/convert.py).

Reading them (detection, the weight-name maps, the Hub view) is `siglip.foreign`, in the I/O tier so that
`hub.resolve_file` can serve a foreign source's view; its public names stay importable from here.
"""

from ..foreign import Foreign, detect, open_foreign
from ..foreign.view import VIEW_FILES, hub_view

__all__ = ["VIEW_FILES", "Foreign", "detect", "hub_view", "open_foreign"]
