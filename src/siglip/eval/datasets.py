"""Evaluation datasets as users keep them, read into one `EvalData`: images with a class label and/or captions.

Formats (`read_dataset` picks by what the path is):
- a class-per-subfolder tree (ImageNet validation layout): `DIR/CLASS/*.jpg`, folder names as class names; with
  split folders (`DIR/train/CLASS/...`, `DIR/test/CLASS/...`) each image records its split;
- a CSV / JSON-lines / Parquet table of image paths (relative to the table's folder) with a label and/or a
  caption column (defaults as `siglip train` reads them: `image`/`path`, `caption`/`text`, `label`; a `split`
  column when present); several rows with the same image are several captions of that image;
- webdataset tars (a `.tar` or a folder of them, in split folders `train/`, `test/` or not): each sample's image
  with its `.cls` label, `.txt` caption or `.json` fields (`label`/`cls`, `caption`/`text`/`captions`); a
  `classnames.txt` and `zeroshot_classification_templates.txt` beside the tars are used (CLIP_benchmark's layout);
- a `.json` list of records, read as a table;
- the COCO / Flickr30k caption JSON of the Karpathy splits (`{"images": [{"filename", "filepath"?, "split",
  "sentences": [{"raw"}]}]}`), images relative to the JSON's folder unless `images_root` says otherwise.

Class names default to folder names (or the label values); a class-name file (one per line, a JSON list, or a
JSON object mapping folder/label -> name, as for ImageNet's wnids) renames them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..bulk.sources import SourceItems, is_supported_image, list_folder, read_table
from ..bulk.webdataset import MEMBER_SEPARATOR, is_webdataset, list_tars, member_stat, read_member, samples
from ..bulk.webdataset import image_member as _image_member
from ..errors import InputError

IMAGE_COLUMNS = ("image", "path")
CAPTION_COLUMNS = ("caption", "text")
LABEL_COLUMN = "label"
SPLIT_COLUMN = "split"
SPLIT_FOLDERS = ("train", "val", "valid", "validation", "test")
TABLES = (".csv", ".jsonl", ".parquet")


@dataclass
class EvalData:
    """Images (paths relative to `root`, or `TAR::MEMBER`) with, per image, a class index into `classnames`
    (`labels`), its captions (`captions`) and its split name (`splits`, "" when the data has no splits)."""

    name: str
    root: str
    images: list[str]
    labels: list[int] | None = None
    classnames: list[str] | None = None
    captions: list[list[str]] | None = None
    splits: list[str] = field(default_factory=list)
    templates: list[str] | None = None  # prompt templates the dataset ships (CLIP_benchmark's webdataset layout)

    def __post_init__(self) -> None:
        if not self.splits:
            self.splits = [""] * len(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def locate(self, position: int) -> str:
        """What to read for image `position`: an absolute path or `ABSOLUTE_TAR::MEMBER`."""
        return os.path.join(self.root, self.images[position])

    def split_names(self) -> list[str]:
        return sorted({split for split in self.splits if split})

    def select(self, split: str | None) -> EvalData:
        """The images of `split` (None: all of them)."""
        if split is None:
            return self
        positions = [i for i, name in enumerate(self.splits) if name == split]
        if not positions:
            have = ", ".join(self.split_names()) or "none: the data has no split folder or column"
            raise InputError(f"{self.name} has no image in split {split!r} (splits: {have})")
        return self.subset(positions)

    def subset(self, positions: list[int]) -> EvalData:
        def pick(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else [values[p] for p in positions]

        return replace(
            self,
            images=[self.images[p] for p in positions],
            labels=pick(self.labels),
            captions=pick(self.captions),
            splits=[self.splits[p] for p in positions],
        )

    def source_items(self) -> SourceItems:
        """The images as a bulk job's source; each item's size and modification time join its fingerprint, so a
        changed file makes a new cache entry rather than reusing a stale embedding."""
        stamps = []
        for position in range(len(self.images)):
            located = self.locate(position)
            stat = member_stat(located)
            if stat is None:
                try:
                    info = os.stat(located)
                    stat = (info.st_size, info.st_mtime_ns)
                except OSError:
                    stat = (-1, -1)
            stamps.append(f"{stat[0]}:{stat[1]}")
        return SourceItems("image", list(self.images), root=self.root, hashes=stamps)

    def describe(self) -> str:
        parts = [f"{len(self)} images"]
        if self.classnames is not None:
            parts.append(f"{len(self.classnames)} classes")
        if self.captions is not None:
            parts.append(f"{sum(len(c) for c in self.captions)} captions")
        if self.split_names():
            parts.append("splits " + "/".join(self.split_names()))
        return f"{self.name}: " + ", ".join(parts)


def read_dataset(
    path: str | os.PathLike,
    *,
    classnames: str | os.PathLike | list[str] | dict[str, str] | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    caption_column: str | None = None,
    split_column: str | None = None,
    images_root: str | os.PathLike | None = None,
) -> EvalData:
    """Read the dataset at `path` (see the module docstring for the formats); `classnames` is a class-name file,
    a list in class order or a mapping folder/label -> name."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"dataset {path} does not exist: give a class-folder tree, a table, tars or a caption JSON")
    names = read_classnames(classnames)
    if is_webdataset(path) or _holds_only_tars(path):
        return _webdataset(path, names)
    if path.is_dir():
        return _class_folders(path, names)
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise InputError(f"cannot read {path}: {error}") from None
        if isinstance(document, dict) and "images" in document:
            return _karpathy(path, document, images_root)
        if isinstance(document, list) and all(isinstance(record, dict) for record in document):
            fields = list(dict.fromkeys(name for record in document for name in record))
            table = {name: [record.get(name) for record in document] for name in fields}
            return _table(path, names, image_column, label_column, caption_column, split_column, table)
        raise InputError(f"{path} is neither a Karpathy-split caption JSON ('images') nor a JSON list of records")
    if suffix in TABLES:
        return _table(path, names, image_column, label_column, caption_column, split_column)
    raise InputError(f"cannot read dataset {path}: give a folder, a .csv/.jsonl/.parquet table, .tar or a .json")


def read_classnames(source: str | os.PathLike | list[str] | dict[str, str] | None) -> list[str] | dict[str, str] | None:
    """A class-name file (one per line, a JSON list or object) or the list / mapping itself."""
    if source is None or isinstance(source, list | dict):
        return source
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read class names {path}: {error}") from None
    if path.suffix.lower() == ".json":
        try:
            names = json.loads(text)
        except ValueError as error:
            raise InputError(f"class names {path} is not valid JSON: {error}") from None
        if not isinstance(names, list | dict):
            raise InputError(f"class names {path} must hold a JSON list or object")
        return names
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_lines_or_json(path: str | os.PathLike, what: str) -> list[str]:
    """A list of strings from a file: a JSON list, or one item per non-blank line (prompt templates, ...)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {what} {path}: {error}") from None
    if path.suffix.lower() == ".json":
        try:
            values = json.loads(text)
        except ValueError as error:
            raise InputError(f"{what} {path} is not valid JSON: {error}") from None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InputError(f"{what} {path} must hold a JSON list of strings")
        return values
    return [line.strip() for line in text.splitlines() if line.strip()]


def _class_index(
    values: list[str], names: list[str] | dict[str, str] | None, source: Path
) -> tuple[list[int], list[str]]:
    """Labels (folder names or label values) -> (class indices, class names in index order)."""
    if isinstance(names, list):
        if all(value.lstrip("-").isdigit() for value in values):  # integer labels index the class-name list
            indices = [int(value) for value in values]
            bad = sorted({i for i in indices if not 0 <= i < len(names)})
            if bad:
                raise InputError(f"{source}: labels {bad[:5]} lie outside the {len(names)} class names given")
            return indices, list(names)
        keys = sorted(set(values))
        if all(value in names for value in values):  # labels are already class names
            return [names.index(value) for value in values], list(names)
        if len(keys) != len(names):
            raise InputError(
                f"{source} has {len(keys)} classes but the class-name list has {len(names)}: a list names the classes "
                "in sorted folder/label order, so it must have one name per class; a JSON object maps each to its name"
            )
        return [keys.index(value) for value in values], list(names)  # sorted folder order = name order
    numeric = all(value.isdigit() for value in values)
    keys = sorted(set(values), key=int) if numeric else sorted(set(values))
    if isinstance(names, dict):
        missing = [key for key in keys if key not in names]
        if missing:
            raise InputError(f"class-name mapping has no name for {missing[:5]} of {source}")
        return [keys.index(value) for value in values], [names[key] for key in keys]
    return [keys.index(value) for value in values], keys


def _class_folders(folder: Path, names: Any) -> EvalData:
    subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_folders = [name for name in subfolders if name in SPLIT_FOLDERS]
    roots = [(name, folder / name) for name in split_folders] if split_folders else [("", folder)]
    images, folders, splits = [], [], []
    for split, root in roots:
        for relative in list_folder(root):
            parts = Path(relative).parts
            if len(parts) < 2 or not is_supported_image(relative):
                continue
            images.append(os.path.relpath(root / relative, folder))
            folders.append(parts[0])
            splits.append(split)
    if not images:
        raise InputError(
            f"{folder} holds no class folders with images (expected DIR/CLASS/IMAGE or DIR/SPLIT/CLASS/IMAGE)"
        )
    labels, classnames = _class_index(folders, names, folder)
    return EvalData(folder.name, os.path.abspath(folder), images, labels, classnames, None, splits)


def _pick_column(table: dict[str, list[Any]], given: str | None, defaults: tuple[str, ...], path: Path) -> str | None:
    if given is not None:
        if given not in table:
            raise InputError(f"{path} has no column {given!r}; columns: {', '.join(table)}")
        return given
    return next((name for name in defaults if name in table), None)


def _table(
    path: Path,
    names: Any,
    image_column: str | None,
    label_column: str | None,
    caption_column: str | None,
    split_column: str | None,
    table: dict[str, list[Any]] | None = None,
) -> EvalData:
    table = read_table(path) if table is None else table
    image_key = _pick_column(table, image_column, IMAGE_COLUMNS, path)
    if image_key is None:
        raise InputError(f"{path} has no image column ({' or '.join(IMAGE_COLUMNS)}); name it with --image-column")
    label_key = _pick_column(table, label_column, (LABEL_COLUMN,), path)
    caption_key = _pick_column(table, caption_column, CAPTION_COLUMNS, path)
    split_key = _pick_column(table, split_column, (SPLIT_COLUMN,), path)
    if label_key is None and caption_key is None:
        raise InputError(f"{path} has neither a label column nor a caption column ({', '.join(CAPTION_COLUMNS)})")
    order: dict[str, int] = {}  # image -> position, in first-appearance order
    raw_labels: list[str] = []
    captions: list[list[str]] = []
    splits: list[str] = []
    for row, image in enumerate(table[image_key]):
        if image is None or str(image) == "":
            raise InputError(f"{path}: row {row + 1} has no image in column {image_key!r}")
        image = str(image)
        if image not in order:
            order[image] = len(order)
            label = table[label_key][row] if label_key else None
            raw_labels.append("" if label is None else str(label))
            captions.append([])
            splits.append(str(table[split_key][row] or "") if split_key else "")
        if caption_key and table[caption_key][row] not in (None, ""):
            captions[order[image]].append(str(table[caption_key][row]))
    labels, classnames = _class_index(raw_labels, names, path) if label_key else (None, None)
    return EvalData(
        path.stem,
        os.path.abspath(path.parent),
        list(order),
        labels,
        classnames,
        captions if caption_key else None,
        splits,
    )


WDS_CLASSNAMES = "classnames.txt"  # beside the tars, as CLIP_benchmark's webdataset datasets ship them
WDS_TEMPLATES = "zeroshot_classification_templates.txt"


def _holds_only_tars(path: Path) -> bool:
    """A folder whose images all sit in tars: `.tar` files (in split subfolders or not) beside text side files."""
    if not path.is_dir():
        return False
    files = list_folder(path)
    return any(name.endswith(".tar") for name in files) and not any(is_supported_image(name) for name in files)


def _webdataset(path: Path, names: Any) -> EvalData:
    root = path.parent if path.is_file() else path
    if names is None and (root / WDS_CLASSNAMES).is_file():
        names = read_classnames(root / WDS_CLASSNAMES)
    templates = read_lines_or_json(root / WDS_TEMPLATES, "templates") if (root / WDS_TEMPLATES).is_file() else None
    images, raw_labels, captions, splits = [], [], [], []
    for tar in list_tars(path):
        relative = os.path.relpath(tar, root)
        folder = Path(relative).parts[0] if len(Path(relative).parts) > 1 else ""
        split = folder if folder in SPLIT_FOLDERS else ""
        for members in samples(tar).values():
            name = _image_member(members)
            if name is None:
                continue
            record: dict[str, Any] = {}
            if "json" in members:
                try:
                    record = json.loads(read_member(f"{tar}{MEMBER_SEPARATOR}{members['json']}") or b"{}")
                except ValueError:
                    record = {}
            label = _member_text(tar, members, "cls")
            if label is None:
                label = record.get("label", record.get("cls"))
            texts = _member_text(tar, members, "txt")
            sample_captions = [texts.strip()] if texts is not None else []
            if not sample_captions:
                found = record.get("captions", record.get("caption", record.get("text")))
                sample_captions = [found] if isinstance(found, str) else [str(c) for c in found or []]
            images.append(f"{relative}{MEMBER_SEPARATOR}{name}")
            raw_labels.append("" if label is None else str(label).strip())
            captions.append(sample_captions)
            splits.append(split)
    if not images:
        raise InputError(f"{path} holds no webdataset sample with an image")
    has_labels = any(raw_labels)
    if has_labels and not all(raw_labels):
        raise InputError(f"{path}: some samples have a label (.cls / json 'label') and some do not")
    labels, classnames = _class_index(raw_labels, names, path) if has_labels else (None, None)
    return EvalData(
        path.stem,
        os.path.abspath(root),
        images,
        labels,
        classnames,
        captions if any(captions) else None,
        splits,
        templates,
    )


def _member_text(tar: Path, members: dict[str, str], extension: str) -> str | None:
    if extension not in members:
        return None
    return (read_member(f"{tar}{MEMBER_SEPARATOR}{members[extension]}") or b"").decode("utf-8", "replace")


def _karpathy(path: Path, document: dict[str, Any], images_root: str | os.PathLike | None) -> EvalData:
    root = Path(images_root) if images_root is not None else path.parent
    images, captions, splits = [], [], []
    for entry in document["images"]:
        if not isinstance(entry, dict) or "filename" not in entry:
            raise InputError(f"{path}: every entry of 'images' needs a 'filename' (Karpathy split format)")
        images.append(os.path.join(entry.get("filepath", ""), entry["filename"]))
        captions.append([str(s.get("raw", "")).strip() for s in entry.get("sentences", []) if isinstance(s, dict)])
        splits.append(str(entry.get("split", "")))
    name = str(document.get("dataset", path.stem))
    return EvalData(name, os.path.abspath(root), images, None, None, captions, splits)
