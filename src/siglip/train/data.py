"""Training data: caption files, webdataset-style tar shards and the synthetic shapes, as resumable streams.

A data source is named by one string (`--data`):
  - `captions.csv` / `captions.jsonl` (or a folder holding one): columns `image`/`path` and `caption`/`text`,
    optional `label`; image paths are relative to the file's folder.
  - `shards/` (a folder of .tar), `data-*.tar` (a glob), `data-{000..009}.tar` (braces) or one `.tar`:
    webdataset-style shards, read as a stream; `key.jpg` + `key.txt` members (consecutive) make one sample.
  - `synthetic` (or `synthetic:train`, `synthetic:eval`, `synthetic:unseen`): coloured shapes generated on the fly.

The data position is one integer, the number of micro-batches each rank has consumed. Map-style sources use
a seeded permutation per epoch (so batch k is a pure function of seed, rank and k); tar streams are endless
(shard order reshuffled per epoch) and skip the samples already consumed on resume.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import random
import re
import tarfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..encode import tokenize_as_trained
from ..errors import ImageError, InputError
from ..image.loading import load_image, to_rgb
from .synthetic import ShapesDataset

IMAGE_COLUMNS = ("image", "path", "file", "filename", "image_path")
TEXT_COLUMNS = ("caption", "text", "title")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")
TEXT_EXTENSIONS = ("txt", "caption", "text")


def _pick(columns: list[str], candidates: tuple[str, ...], what: str, source: Path) -> str:
    for name in candidates:
        if name in columns:
            return name
    raise InputError(f"{source} has no {what} column: expected one of {candidates}, found {columns}.")


class CaptionFileDataset:
    """Images on disk listed in a CSV or JSONL file with their captions (and optional class labels)."""

    def __init__(self, path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> None:
        self.path = Path(path)
        rows = self._read_rows()
        if not rows:
            raise InputError(f"{self.path} lists no samples.")
        image_key = _pick(list(rows[0]), IMAGE_COLUMNS, "image path", self.path)
        text_key = _pick(list(rows[0]), TEXT_COLUMNS, "caption", self.path)
        root = Path(image_root) if image_root else self.path.parent
        self.images = [root / str(row[image_key]) for row in rows]
        self.captions = [str(row[text_key]) for row in rows]
        self.labels = [str(row["label"]) for row in rows] if "label" in rows[0] else None
        missing = [str(p) for p in self.images if not p.is_file()]
        if missing:
            raise InputError(f"{len(missing)} images listed in {self.path} do not exist, e.g. {missing[:3]}.")

    def _read_rows(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as error:
            raise InputError(f"cannot read {self.path}: {error}") from None
        if self.path.suffix.lower() == ".csv":
            return list(csv.DictReader(io.StringIO(text)))
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as error:
            raise InputError(f"{self.path} is not valid JSONL: {error}") from None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, str]:
        # the hardened loader: typed ImageError naming the file, memory cap, format allow-list (image/loading.py)
        return to_rgb(load_image(self.images[index])), self.captions[index]


def expand_shards(spec: str) -> list[str]:
    """`a-{000..003}.tar`, a glob, a folder of .tar files or one file -> sorted list of shard paths."""
    match = re.search(r"\{(\d+)\.\.(\d+)\}", spec)
    if match:
        first, last = match.group(1), match.group(2)
        width = len(first)
        names = [
            spec[: match.start()] + str(i).zfill(width) + spec[match.end() :] for i in range(int(first), int(last) + 1)
        ]
    elif os.path.isdir(spec):
        names = sorted(glob.glob(os.path.join(spec, "*.tar")))
    else:
        names = sorted(glob.glob(spec))
    missing = [name for name in names if not os.path.isfile(name)]
    if not names or missing:
        raise InputError(f"no tar shards found for {spec!r}" + (f" (missing {missing[:3]})" if missing else "") + ".")
    return names


def iter_tar_samples(path: str) -> Iterator[tuple[Image.Image, str]]:
    """Stream (image, caption) pairs from one tar: members sharing a key (`dir/key.jpg`, `dir/key.txt`)."""
    key, parts = None, {}
    with tarfile.open(path, mode="r|*") as archive:
        for member in archive:
            if not member.isfile():
                continue
            stem, _, extension = member.name.rpartition("/")[2].partition(".")
            member_key = member.name.rpartition("/")[0] + "/" + stem
            if member_key != key:
                if key is not None and (sample := _tar_sample(parts, path, key)) is not None:
                    yield sample
                key, parts = member_key, {}
            handle = archive.extractfile(member)
            if handle is not None:
                parts[extension.lower()] = handle.read()
    if key is not None and (sample := _tar_sample(parts, path, key)) is not None:
        yield sample


def _tar_sample(parts: dict[str, bytes], shard: str, key: str) -> tuple[Image.Image, str] | None:
    image_bytes = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
    text = next((parts[e].decode("utf-8").strip() for e in TEXT_EXTENSIONS if e in parts), None)
    if text is None and "json" in parts:
        text = json.loads(parts["json"]).get("caption")
    if image_bytes is None or text is None:
        return None
    try:
        return to_rgb(load_image(image_bytes)), text
    except ImageError as error:  # skipped the same way on every pass, so resume positions stay exact
        warnings.warn(f"{shard}: sample {key} skipped: {error}", stacklevel=2)
        return None


class TarShardStream(IterableDataset):
    """An endless stream over tar shards, split across ranks and DataLoader workers.

    With at least as many shards as (ranks x workers), each reader owns whole shards; otherwise every reader
    reads all shards and keeps every n-th sample. The shard order is reshuffled each epoch from the seed.
    `skip_batches` (the resume position) is translated into the samples each worker skips: the DataLoader
    takes batches round-robin from its workers, so worker w produced batches w, w + W, w + 2W, ...
    """

    def __init__(
        self,
        shards: list[str],
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        skip_batches: int = 0,
        repeat: bool = True,
    ) -> None:
        super().__init__()
        self.shards, self.batch_size, self.seed, self.repeat = shards, batch_size, seed, repeat
        self.rank, self.world_size, self.skip_batches = rank, world_size, skip_batches

    def __iter__(self) -> Iterator[tuple[Image.Image, str]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        reader, readers = self.rank * workers + worker, self.world_size * workers
        own_batches = len(range(worker, self.skip_batches, workers))
        to_skip = own_batches * self.batch_size
        epoch = 0
        while True:
            order = list(self.shards)
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
            if len(order) >= readers:
                streams, keep = order[reader::readers], (lambda index: True)
            else:
                streams, keep = order, (lambda index: index % readers == reader)
            index = 0
            for shard in streams:
                for sample in iter_tar_samples(shard):
                    if keep(index):
                        if to_skip > 0:
                            to_skip -= 1
                        else:
                            yield sample
                    index += 1
            epoch += 1
            if not self.repeat:
                return


class EpochBatchSampler:
    """Endless batches of indices: a fresh seeded permutation per epoch, split evenly across ranks.

    Batch k of rank r depends only on (seed, length, batch_size, world_size, r, k), so a run can restart at
    any batch (`start`) and see exactly what an uninterrupted run would have seen.
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start: int = 0,
        shuffle: bool = True,
    ) -> None:
        self.per_epoch = length // world_size // batch_size
        if self.per_epoch == 0:
            raise InputError(
                f"the dataset has {length} samples, fewer than one batch ({batch_size}) per rank x {world_size} ranks."
            )
        self.length, self.batch_size, self.rank, self.world_size = length, batch_size, rank, world_size
        self.seed, self.start, self.shuffle = seed, start, shuffle

    def __iter__(self) -> Iterator[list[int]]:
        epoch, offset = divmod(self.start, self.per_epoch)
        while True:
            if self.shuffle:
                order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed + epoch))
            else:
                order = torch.arange(self.length)
            mine = order[self.rank :: self.world_size]
            for batch in range(offset, self.per_epoch):
                yield mine[batch * self.batch_size : (batch + 1) * self.batch_size].tolist()
            epoch, offset = epoch + 1, 0


class Collator:
    """(image, caption) pairs -> {"pixel_values", "input_ids"} with the model's processor.

    Texts are padded to `max_length` (SigLIP pools the last position, so training and inference must pad alike).
    """

    def __init__(self, processor: Any, max_length: int) -> None:
        self.processor, self.max_length = processor, max_length

    def __call__(self, samples: list[tuple[Image.Image, str]]) -> dict[str, torch.Tensor]:
        images, texts = zip(*samples)
        batch = tokenize_as_trained(self.processor, texts, self.max_length, images=list(images))
        return {"pixel_values": batch["pixel_values"], "input_ids": batch["input_ids"]}


def open_source(spec: str, image_root: str | None = None, seed: int = 0, image_size: int = 64) -> Any:
    """The dataset `spec` names: a map-style dataset, or a list of tar shard paths."""
    if spec.startswith("synthetic"):
        split = spec.partition(":")[2] or "train"
        if split not in ("train", "eval", "unseen"):
            raise InputError(
                f"unknown synthetic split {split!r}: use synthetic:train, synthetic:eval or synthetic:unseen."
            )
        return ShapesDataset(split=split, seed=seed, image_size=image_size)
    path = Path(spec)
    if path.is_dir():
        for name in ("captions.csv", "captions.jsonl", "metadata.csv", "metadata.jsonl"):
            if (path / name).is_file():
                return CaptionFileDataset(path / name, image_root)
        return expand_shards(spec)
    if path.suffix.lower() in (".csv", ".jsonl", ".json"):
        return CaptionFileDataset(path, image_root)
    if "{" in spec or "*" in spec or path.suffix.lower() == ".tar":
        return expand_shards(spec)
    raise InputError(
        f"cannot tell what kind of data {spec!r} is: give a .csv/.jsonl caption file (or a folder with "
        "captions.csv), tar shards (folder, glob or a-{000..009}.tar) or 'synthetic'."
    )


def build_loader(
    source: Any,
    collate: Collator,
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    start_batch: int = 0,
    num_workers: int = 0,
) -> DataLoader:
    """An endless DataLoader of micro-batches for this rank, starting at micro-batch `start_batch`."""
    common = dict(collate_fn=collate, num_workers=num_workers, persistent_workers=False)
    if isinstance(source, list):  # tar shards
        stream = TarShardStream(source, batch_size, rank, world_size, seed, skip_batches=start_batch)
        return DataLoader(stream, batch_size=batch_size, **common)
    sampler = EpochBatchSampler(len(source), batch_size, rank, world_size, seed, start=start_batch)
    return DataLoader(source, batch_sampler=sampler, **common)
