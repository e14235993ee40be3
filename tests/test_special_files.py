"""Special files never hang a reader: a FIFO, or a symlink to /dev/zero or /dev/urandom named like an image, a
text file or a config, is refused with a typed error (or recorded as "unsupported" by a bulk job) without being
read. Every check runs under a time bound: a regression shows as a failure, not a hung suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import FIXTURES

import siglip
from siglip.bulk import read_manifest
from siglip.errors import ConfigError, ImageError, InputError, SiglipError
from siglip.files import open_regular, read_json, read_regular, special_file_reason
from siglip.image.loading import load_image

DEMO_MODEL = Path(__file__).parent.parent / "models" / "siglip-demo-shapes"
pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="POSIX only")


def bounded(function, seconds: float = 20.0):
    """Run `function` in a daemon thread; fail (instead of hanging) when it takes longer than `seconds`."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{function} still running after {seconds} s (it blocks on a special file)"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome.get("value")


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "siglip", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def specials(tmp_path) -> dict[str, Path]:
    """A FIFO and symlinks to /dev/zero and /dev/urandom, each named like a photo."""
    folder = tmp_path / "specials"
    folder.mkdir()
    os.mkfifo(folder / "fifo.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    (folder / "urandom.png").symlink_to("/dev/urandom")
    return {path.name: path for path in folder.iterdir()}


def test_file_helpers_refuse_special_files(specials, tmp_path):
    for path in specials.values():
        assert "not a regular file" in special_file_reason(path)
        with pytest.raises(InputError, match="not a regular file"):
            bounded(lambda path=path: open_regular(path, "input"))
        with pytest.raises(ConfigError, match="not a regular file"):
            bounded(lambda path=path: read_json(path))
    assert "FIFO" in special_file_reason(specials["fifo.jpg"])
    assert "character device" in special_file_reason(specials["zero.jpg"]) and "/dev/zero" in special_file_reason(
        specials["zero.jpg"]
    )
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 1000)
    with pytest.raises(InputError, match="larger than"):
        read_regular(big, 999)
    assert read_regular(big, 1000) == b"x" * 1000


def test_load_image_refuses_special_files_without_reading(specials):
    for path in specials.values():
        with pytest.raises(ImageError, match="not a regular file"):
            bounded(lambda path=path: load_image(path))
        with pytest.raises(ImageError):
            bounded(lambda path=path: siglip.SiglipImageProcessor()(str(path)))


def test_bulk_job_records_special_files_as_unsupported_and_never_hangs(specials, tmp_path):
    folder = specials["fifo.jpg"].parent
    shutil.copy(FIXTURES / "horse.png", folder / "horse.png")
    out = tmp_path / "out.emb"
    result = run_cli("embed", str(folder), "--out", str(out), "--model", str(DEMO_MODEL))
    assert result.returncode == 0, result.stderr
    assert "1 embedded, 0 corrupt, 3 unsupported" in result.stdout, result.stdout
    rows = {Path(row.path).name: row for row in read_manifest(next(out.glob("manifest.*")))}
    assert rows["horse.png"].status == "ok"
    for name in ("fifo.jpg", "zero.jpg", "urandom.png"):
        assert rows[name].status == "unsupported" and "not a regular file" in rows[name].error, rows[name]
    # A sync of the same folder hashes changed items: special files must not be read there either.
    (folder / "coffee.png").write_bytes((FIXTURES / "coffee.png").read_bytes())
    again = run_cli("embed", str(folder), "--out", str(out), "--model", str(DEMO_MODEL))
    assert again.returncode == 0, again.stderr
    assert siglip.Index.open(out).paths and len(siglip.Index.open(out)) == 2


def test_embed_files_skip_errors_and_plain_errors_with_special_files(specials, tmp_path):
    good = tmp_path / "horse.png"
    shutil.copy(FIXTURES / "horse.png", good)
    out = tmp_path / "emb.npy"
    paths = [str(good), *map(str, specials.values())]
    skipped = run_cli("embed", *paths, "--out", str(out), "--model", str(DEMO_MODEL), "--skip-errors")
    assert skipped.returncode == 0, skipped.stderr
    assert "not a regular file" in skipped.stderr
    plain = run_cli("classify", str(specials["zero.jpg"]), "--labels", "a,b", "--model", str(DEMO_MODEL))
    assert plain.returncode == 2 and "siglip: error:" in plain.stderr and "character device" in plain.stderr


@pytest.mark.parametrize("name", ["fifo.jpg", "zero.jpg", "urandom.png"])
def test_text_file_special_files_are_refused(specials, tmp_path, name):
    result = run_cli(
        "embed", "--text-file", str(specials[name]), "--out", str(tmp_path / "t.npy"), "--model", str(DEMO_MODEL)
    )
    assert result.returncode == 2, result.stderr
    assert "--text-file" in result.stderr and "not a regular file" in result.stderr


def test_text_and_table_sources_refuse_special_files(tmp_path):
    from siglip.bulk import list_source

    os.mkfifo(tmp_path / "texts.txt")
    (tmp_path / "table.csv").symlink_to("/dev/zero")
    with pytest.raises(InputError, match="FIFO"):
        bounded(lambda: list_source(tmp_path / "texts.txt"))
    with pytest.raises(InputError, match="character device"):
        bounded(lambda: list_source(tmp_path / "table.csv", column="x"))


@pytest.mark.parametrize("name", ["config.json", "preprocessor_config.json", "tokenizer_config.json", "spiece.model"])
def test_model_folder_files_that_are_special_are_refused(tmp_path, name):
    folder = tmp_path / "model"
    shutil.copytree(DEMO_MODEL, folder)
    target = folder / name
    target.unlink(missing_ok=True)
    target.symlink_to("/dev/zero")
    with pytest.raises(SiglipError):
        bounded(lambda: siglip.AutoProcessor.from_pretrained(folder) and siglip.AutoModel.from_pretrained(folder))
    target.unlink()
    os.mkfifo(target)
    with pytest.raises(SiglipError):
        bounded(lambda: siglip.AutoProcessor.from_pretrained(folder) and siglip.AutoModel.from_pretrained(folder))
