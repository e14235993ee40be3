"""`siglip embed`: export image or text embeddings to one `.npy` or `.parquet` file, or (bulk) to a folder.

One file (`--out X.npy` / `--out X.parquet`):

- `.npy`: a float32 (N, D) array, plus `<name>.inputs.json` beside it: the inputs in row order, the model,
  and whether rows are L2-normalised.
- `.parquet` (needs pyarrow: `pip install siglip[parquet]`): columns `input` (string) and `embedding`
  (fixed-size list of float32), the same facts in the schema metadata.
Unreadable images stop the run naming the file, or with `--skip-errors` are left out and reported.

A folder (`--out DIR`, no .npy/.parquet suffix): the resumable bulk job of `siglip.bulk` over one SOURCE (a
folder tree of images, a text file, or a CSV/Parquet `--column`): shards of `--shard-size` embeddings
(`--format npy|safetensors`) plus a manifest; re-running the same command resumes; `--ray [ADDRESS]` runs it
on Ray Data. Unreadable and unsupported files never stop a bulk job: they are listed in the manifest.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import DependencyError, InputError
from ..files import read_text
from .common import add_model_arguments, check_positive, load_model_and_processor, progress_bar, shown, warn

FORMATS = (".npy", ".parquet")
MAX_TEXT_FILE_BYTES = 1 << 30  # largest --text-file read


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "embed",
        help="export image or text embeddings to .npy or .parquet",
        description="Embed images (files, folders, URLs) or texts with one model and write them to one file.",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE_OR_DIR", help="image files, folders or URLs")
    parser.add_argument("--text", nargs="+", default=None, metavar="TEXT", help="texts to embed instead of images")
    parser.add_argument(
        "--text-file", default=None, help="a UTF-8 file with one text per line (blank lines are skipped)"
    )
    parser.add_argument("--out", "-o", required=True, help="output: a .npy or .parquet file, or a folder (bulk job)")
    parser.add_argument("--no-normalize", action="store_true", help="keep raw (not L2-normalised) embeddings")
    parser.add_argument("--skip-errors", action="store_true", help="leave unreadable images out and go on")
    parser.add_argument(
        "--ignore-exif", action="store_true", help="keep the stored orientation (default: apply EXIF, as transformers)"
    )
    bulk = parser.add_argument_group("bulk job (--out is a folder)")
    bulk.add_argument("--format", default="npy", choices=("npy", "safetensors"), help="shard file format")
    bulk.add_argument("--shard-size", type=int, default=4096, help="items per shard (default: %(default)s)")
    bulk.add_argument("--column", default=None, help="the column of a CSV/Parquet SOURCE to embed")
    bulk.add_argument(
        "--kind", default="auto", choices=("auto", "image", "text"), help="a --column of image paths: image"
    )
    bulk.add_argument("--workers", type=int, default=None, help="image decoding threads (default: up to 4)")
    bulk.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray Data: a local instance, or the cluster at ADDRESS (e.g. auto); put it after SOURCE",
    )
    bulk.add_argument("--ray-actors", type=int, default=1, help="model replicas on Ray (default: %(default)s)")
    bulk.add_argument(
        "--key", default=None, help="the row-key column of a CSV/Parquet SOURCE (a sync matches rows by it)"
    )
    bulk.add_argument("--dry-run", action="store_true", help="print what a sync would do, write nothing")
    bulk.add_argument(
        "--rebuild", action="store_true", help="discard the collection in --out and embed everything again"
    )
    add_model_arguments(parser)
    parser.set_defaults(run=run)


def read_texts(args: argparse.Namespace) -> list[str] | None:
    if args.text is None and args.text_file is None:
        return None
    texts = list(args.text or [])
    if args.text_file is not None:
        # A regular file only (a FIFO or /dev/zero is refused, never read), at most MAX_TEXT_FILE_BYTES.
        lines = read_text(args.text_file, MAX_TEXT_FILE_BYTES, "--text-file", InputError).splitlines()
        kept = [line for line in lines if line.strip()]
        if len(kept) < len(lines):
            warn(f"skipped {len(lines) - len(kept)} blank lines of {shown(args.text_file)}")
        texts += kept
    return texts


def run(args: argparse.Namespace) -> int:
    from ..encode import encode_texts
    from ..image.batches import expand_image_paths

    check_positive(args.workers, "--workers")
    suffix = Path(args.out).suffix.lower()
    if suffix not in FORMATS or Path(args.out).is_dir():  # any other name (photos.emb, photos.emb/) is a folder
        return run_bulk(args)
    if suffix == ".parquet":
        require_pyarrow()
    texts = read_texts(args)
    if (texts is None) == (not args.images):
        raise InputError("give either images (files or folders) or --text/--text-file, not both and not neither")
    inputs = texts if texts is not None else expand_image_paths(args.images)
    if not inputs:
        raise InputError("nothing to embed: no texts or no image files found")
    if suffix == ".parquet":
        check_utf8(inputs)
    check_writable(Path(args.out))
    model, processor = load_model_and_processor(args)
    normalize = not args.no_normalize
    with progress_bar(len(inputs), args, unit="text" if texts is not None else "img") as bar:
        if texts is not None:
            kept, embeds = inputs, encode_texts(model, processor, inputs, normalize=normalize, progress=bar.update)
            rows = embeds.float().cpu().numpy()
        else:
            kept, rows = embed_images(model, processor, inputs, args, normalize, bar)
    metadata = {"model": str(args.model), "kind": "text" if texts is not None else "image", "normalized": normalize}
    write_embedding_file(Path(args.out), kept, rows, metadata)
    print(f"wrote {len(kept)} embeddings of dimension {rows.shape[1]} to {shown(args.out)}")
    return 0 if kept else 1


def run_bulk(args: argparse.Namespace) -> int:
    """The sharded, resumable job of `siglip.bulk` into the folder `--out`; prints a summary."""
    from ..bulk import embed_source

    if args.text is not None:
        raise InputError("a bulk job (--out is a folder) embeds a SOURCE: put the texts in a file, one per line")
    sources = list(args.images) + ([args.text_file] if args.text_file else [])
    if len(sources) != 1:
        raise InputError(f"a bulk job (--out is a folder) takes exactly one SOURCE, got {len(sources)}")
    if args.shard_size < 1:
        raise InputError(f"--shard-size must be >= 1, got {args.shard_size}")

    def make_bar(total: int, initial: int) -> Any:
        bar = progress_bar(total, args, unit="item")
        bar.update(initial)
        return bar

    summary = embed_source(
        sources[0],
        args.out,
        model=str(args.model),
        revision=args.revision,
        column=args.column,
        key=args.key,
        dry_run=args.dry_run,
        rebuild=args.rebuild,
        kind="text" if args.text_file else args.kind,
        shard_size=args.shard_size,
        fmt=args.format,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
        normalize=not args.no_normalize,
        workers=args.workers,
        honor_exif=not args.ignore_exif,
        use_fast=args.fast_preprocess,
        fast_decode=args.fast_decode,
        ray=args.ray is not None,
        ray_address=args.ray or None,
        ray_actors=args.ray_actors,
        make_bar=make_bar,
    )
    for note in summary.notes:
        warn(note)
    if args.dry_run:
        print(summary.changes)
        return 0
    for row in summary.failures[:20]:
        warn(f"skipped {row.path}: {row.status}: {row.error}")
    if len(summary.failures) > 20:
        warn(f"... and {len(summary.failures) - 20} more (status != ok in the manifest)")
    print(summary.changes)
    print(summary.line())
    manifest = next(Path(args.out).glob("manifest.*"), None)
    print(f"wrote {args.out}; manifest: {manifest}")
    return 0 if summary.ok else 1


def embed_images(
    model: Any, processor: Any, paths: list[str], args: argparse.Namespace, normalize: bool, bar: Any
) -> tuple[list[str], Any]:
    import numpy as np

    from ..encode import iter_encoded_images

    kept, chunks = [], []
    batches = iter_encoded_images(
        model,
        processor,
        paths,
        args.batch_size,
        normalize=normalize,
        skip_errors=args.skip_errors,
        honor_exif=not args.ignore_exif,
    )
    for batch, embeds in batches:
        for index, error in batch.failures:
            warn(f"skipped {shown(paths[index])}: {error}")
        if embeds is not None:
            kept += [paths[index] for index in batch.indices]
            chunks.append(embeds.float().cpu().numpy())
        bar.update(len(batch.indices) + len(batch.failures))
    if len(kept) < len(paths):
        warn(f"{len(paths) - len(kept)} of {len(paths)} images could not be read")
    dim = model.config.vision_config.hidden_size
    return kept, np.concatenate(chunks) if chunks else np.empty((0, dim), np.float32)


def write_embedding_file(path: Path, inputs: list[str], rows: Any, metadata: dict[str, Any]) -> None:
    """Write rows (a float (N, D) numpy array) + their inputs, each file all or nothing (`files.atomic_write`)."""
    import numpy as np

    from ..files import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npy":

        def write(temporary: Path) -> None:
            with open(temporary, "wb") as handle:
                np.save(handle, rows.astype(np.float32, copy=False))

        text = sidecar_json({**metadata, "inputs": inputs})
        atomic_write(path.with_suffix(".inputs.json"), lambda temporary: temporary.write_text(text, encoding="utf-8"))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat = pa.array(rows.astype(np.float32, copy=False).reshape(-1))
        embedding = pa.FixedSizeListArray.from_arrays(flat, rows.shape[1])
        table = pa.table({"input": pa.array(inputs, pa.string()), "embedding": embedding})
        table = table.replace_schema_metadata({"siglip": json.dumps(metadata)})

        def write(temporary: Path) -> None:
            pq.write_table(table, temporary)

    atomic_write(path, write)


def sidecar_json(listing: dict[str, Any]) -> str:
    """The `.inputs.json` text: UTF-8 as is; if a file name is not UTF-8 (a surrogate escape of a raw byte), all
    non-ASCII is written as JSON `\\u` escapes, which read back to the same string (`os.fsencode` gives the
    bytes)."""
    text = json.dumps(listing, ensure_ascii=False, indent=1)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(listing, ensure_ascii=True, indent=1)
    return text


def check_utf8(inputs: list[str]) -> None:
    """A Parquet string column holds only UTF-8: refuse file names that are not, before any work."""
    for name in inputs:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(
                f"the file name {shown(name)} is not valid UTF-8 and cannot go in a Parquet string column: "
                "rename it, or write --out X.npy (its .inputs.json keeps any name)"
            ) from None


def check_writable(path: Path) -> None:
    """Fail before loading the model if `--out` cannot be written (a folder, a read-only or virtual file system)."""
    if path.is_dir():
        raise InputError(f"--out {shown(path)} is a folder; give a .npy or .parquet file name")
    probe = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.open("wb").close()
        probe.unlink()
    except OSError as error:
        raise InputError(f"cannot write --out {shown(path)}: {error.strerror or error}") from None


def require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise DependencyError("writing .parquet needs pyarrow: pip install 'siglip[parquet]'") from None
