"""The collections a server searches (folders written by `siglip embed`) and the thumbnails of their items.

Items get one integer id across all loaded collections (collection offsets in load order), so a hit can name
its thumbnail as `/v1/items/{id}/thumbnail`. A thumbnail is read only from the path the collection's own
manifest records for that id: nothing from the client is ever used as a file-system path.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..bulk.index import Index
from ..encode import load_rgb
from ..errors import ImageError, InputError

THUMBNAIL_SIZES = (64, 128, 256, 512)


@dataclass
class ServedCollection:
    """One loaded `siglip embed` folder: its name (the folder's), kind (image/text), index and id offset."""

    name: str
    kind: str
    index: Index
    offset: int
    root: str = ""  # relative item paths are read from here (the embedded folder)

    def __len__(self) -> int:
        return len(self.index)


class ServedCollections:
    """Search over every loaded collection; item lookup by global id."""

    def __init__(self, folders: list[str | os.PathLike] | None = None, *, dim: int | None = None) -> None:
        self.items: list[ServedCollection] = []
        offset = 0
        for folder in folders or []:
            index = Index.open(folder)
            if dim is not None and index.dim != dim:
                raise InputError(
                    f"collection {Path(folder).name} holds {index.dim}-d embeddings, the served model gives {dim}-d: "
                    "serve it with the model that embedded it"
                )
            name = self._unique(Path(folder).resolve().name)
            root = index.root if os.path.isdir(index.root) else ""
            self.items.append(ServedCollection(name, index.kind, index, offset, root))
            offset += len(index)
        self._thumbnails: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def _unique(self, name: str) -> str:
        taken = {c.name for c in self.items}
        candidate, n = name, 2
        while candidate in taken:
            candidate, n = f"{name}-{n}", n + 1
        return candidate

    def describe(self) -> list[dict[str, Any]]:
        return [
            {"name": c.name, "kind": c.kind, "count": len(c), "dim": c.index.dim, "model": c.index.model_name}
            for c in self.items
        ]

    def search(self, query: np.ndarray, k: int, *, ann: bool = False, name: str | None = None) -> list[dict[str, Any]]:
        """The k best items for one (D,) query embedding over the named (or every) collection, best first."""
        chosen = [c for c in self.items if name is None or c.name == name]
        if not self.items:
            raise InputError("this server has no collection loaded: start it with `siglip serve COLLECTION_DIR ...`")
        if not chosen:
            raise InputError(f"no collection named {name!r}; loaded: {', '.join(c.name for c in self.items)}")
        hits = []
        for collection in chosen:
            for hit in collection.index.search(query, k, ann=ann)[0]:
                item_id = collection.offset + hit.index
                hits.append(
                    {
                        "id": item_id,
                        "collection": collection.name,
                        "path": hit.path,
                        "row": hit.index,
                        "score": hit.score,
                        "thumbnail": f"/v1/items/{item_id}/thumbnail" if collection.kind == "image" else None,
                    }
                )
        hits.sort(key=lambda hit: -hit["score"])
        return hits[:k]

    def locate(self, item_id: int) -> tuple[ServedCollection, int]:
        for collection in self.items:
            if collection.offset <= item_id < collection.offset + len(collection):
                return collection, item_id - collection.offset
        raise KeyError(item_id)

    def thumbnail(self, item_id: int, size: int, cache_entries: int = 512) -> bytes:
        """JPEG bytes of item `item_id` fitted into size x size (KeyError: no such image item; ImageError)."""
        collection, row = self.locate(item_id)
        if collection.kind != "image":
            raise KeyError(item_id)
        key = (item_id, size)
        with self._lock:
            cached = self._thumbnails.get(key)
        if cached is not None:
            return cached
        path = os.path.join(collection.root, collection.index.paths[row])  # an absolute item path stays as it is
        try:
            image = load_rgb(path, honor_exif=True, draft_size=(size, size))
        except ImageError:
            raise ImageError(f"item {item_id} can no longer be read on the server") from None  # no path echoed
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        data = buffer.getvalue()
        with self._lock:
            self._thumbnails[key] = data
            while len(self._thumbnails) > cache_entries:
                self._thumbnails.popitem(last=False)
        return data
