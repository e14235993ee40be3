"""The `siglip` command's contract for mistakes and pipes: every input mistake is one `siglip: error: ...` line
and exit code 2 (never a traceback), a bug says "internal error" (traceback behind `--debug`), `| head` exits
quietly, and `siglip --help` does not import torch.

Commands run in-process through `siglip.cli.main([...])` where they can, on the shipped demo model (small and
fast to load); a subprocess where the process itself matters (imports, pipes).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from siglip.cli import main
from siglip.cli.common import run_reporting_errors, shown

ROOT = Path(__file__).resolve().parent.parent
DEMO = str(ROOT / "models" / "siglip-demo-shapes")
IMAGES = ROOT / "examples" / "images"
IMAGE = str(IMAGES / "blue_circle.png")


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_input_error(capsys, *argv: str, mentions: str = "") -> str:
    code, _, err = run_main(capsys, *argv)
    assert code == 2, err
    assert err.startswith("siglip: error: ") and "Traceback" not in err, err
    assert mentions in err, err
    return err


# ---- the process: imports and pipes --------------------------------------------------------------------------
def test_help_imports_no_torch():
    """`siglip --help` and every `siglip COMMAND --help` build all parsers without torch, numpy or PIL."""
    script = (
        "import sys, contextlib, io\n"
        "from siglip.cli import COMMANDS, main\n"
        "for argv in [['--help']] + [[name, '--help'] for name in COMMANDS]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try: main(argv)\n"
        "        except SystemExit: pass\n"
        "print(sorted(m for m in ('torch', 'numpy', 'PIL', 'huggingface_hub') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_closed_stdout_pipe_exits_quietly():
    """`siglip ... | head`: the reader goes away; no BrokenPipeError traceback, exit code 141 (as SIGPIPE)."""
    argv = [sys.executable, "-m", "siglip", "classify", str(IMAGES), "--labels", "red circle", "--model", DEMO]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # before the command writes anything
    _, err = process.communicate(timeout=300)
    assert process.returncode == 141, err
    assert err.decode() == ""


# ---- the error wrapper -----------------------------------------------------------------------------------------
def _bug(args):
    return {}["missing"]  # a KeyError that no input check anticipated


def test_internal_error_says_so_and_debug_shows_the_traceback(capsys):
    class Args:
        debug = False

    assert run_reporting_errors(_bug, Args(), "siglip") == 1
    err = capsys.readouterr().err
    assert "siglip: internal error: KeyError" in err and "--debug" in err and "Traceback" not in err
    Args.debug = True
    with pytest.raises(KeyError):
        run_reporting_errors(_bug, Args(), "siglip")


def test_debug_flag_prints_the_traceback_of_an_input_error(capsys):
    code, _, err = run_main(capsys, "--debug", "classify", IMAGE, "--labels", "x", "--top-k", "0", "--model", DEMO)
    assert code == 2 and "Traceback" in err and "siglip: error: --top-k" in err


def test_os_error_naming_a_file_is_an_input_error(capsys):
    def unreadable(args):
        open("/nonexistent/dir/file.txt")

    assert run_reporting_errors(unreadable, None, "siglip") == 2
    err = capsys.readouterr().err
    assert err.startswith("siglip: error: /nonexistent/dir/file.txt: No such file")


def test_shown_escapes_newlines_and_undecodable_bytes():
    assert shown("photos/cat.jpg") == "photos/cat.jpg"
    assert shown("a\nb.png") == "'a\\nb.png'"
    assert "\\udcff" in shown(os.fsdecode(b"x\xff.png"))


# ---- input mistakes found by the audit: one line, exit 2 ------------------------------------------------------
def test_embed_unwritable_out_and_negative_workers(capsys, tmp_path):
    assert_input_error(capsys, "embed", "--text", "a", "--model", DEMO, "--out", "/proc/a.npy", mentions="/proc/a.npy")
    assert_input_error(capsys, "embed", "--text", "a", "--workers", "-2", "--out", str(tmp_path / "w.npy"))
    (tmp_path / "dir.npy").mkdir()
    assert_input_error(capsys, "embed", "--text", "a", "--model", DEMO, "--out", str(tmp_path / "dir.npy"))


def test_embed_file_names_not_utf8_or_with_newlines(capsys, tmp_path):
    import json
    import shutil

    folder = tmp_path / "odd"
    folder.mkdir()
    raw = os.path.join(os.fsencode(folder), b"\xff.png")
    shutil.copy(IMAGE, raw)
    shutil.copy(IMAGE, folder / "a\nb.png")
    code, out, err = run_main(capsys, "embed", str(folder), "--model", DEMO, "--out", str(tmp_path / "e.npy"))
    assert code == 0, err
    inputs = json.loads((tmp_path / "e.inputs.json").read_text())["inputs"]
    assert sorted(os.fsencode(name)[-5:] for name in inputs) == [b"a\nb.png"[-5:], b"\xff.png"[-5:]]
    err = assert_input_error(
        capsys, "embed", str(folder), "--model", DEMO, "--out", str(tmp_path / "e.parquet"), mentions="UTF-8"
    )
    code, out, _ = run_main(capsys, "classify", str(folder), "--labels", "a", "--model", DEMO)
    assert code == 0 and "'" + str(folder / "a\\nb.png") + "'" in out and "\\udcff" in out
    assert all(line.startswith(("  ", "'", str(folder))) for line in out.splitlines())


def test_embed_text_file_skips_blank_lines(capsys, tmp_path):
    import numpy as np

    texts = tmp_path / "t.txt"
    texts.write_text("a red circle\n\n   \na blue square\n")
    code, _, err = run_main(
        capsys, "embed", "--text-file", str(texts), "--model", DEMO, "--out", str(tmp_path / "t.npy")
    )
    assert code == 0 and "skipped 2 blank lines" in err
    assert np.load(tmp_path / "t.npy").shape[0] == 2


@pytest.mark.parametrize(
    "extra, mentions",
    [
        (["--device", "cuda:99"], "--device"),
        (["--device", "gpu"], "--device"),
        (["--threads", "-1"], "--threads"),
        (["--num-workers", "-1"], "--num-workers"),
    ],
)
def test_train_bad_runtime_options(capsys, tmp_path, extra, mentions):
    base = ["train", "--output-dir", str(tmp_path / "run"), "--data", "synthetic", "--model", DEMO]
    assert_input_error(capsys, *base, *extra, mentions=mentions)


def test_train_output_dir_naming_a_file(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    base = ["train", "--output-dir", str(tmp_path / "file"), "--data", "synthetic", "--model", DEMO]
    assert_input_error(capsys, *base, mentions="is a file")


def test_train_help_shows_defaults_and_dtype_alias():
    from siglip.cli import build_parser

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    text = train.format_help()
    assert "(default: 100)" in text and "--dtype" in text and "--precision" in text
    args = parser.parse_args(["train", "--precision", "bf16"])
    assert args.precision == "bf16" and parser.parse_args(["train", "--dtype", "bf16"]).precision == "bf16"


def test_train_warns_when_warmup_covers_the_run():
    from siglip.train import TrainConfig

    notes = TrainConfig(output_dir="x", data="synthetic", model="m", steps=50, warmup_steps=100).notes()
    assert len(notes) == 1 and "--warmup-steps 100 >= --steps 50" in notes[0]
    assert TrainConfig(output_dir="x", data="synthetic", model="m", steps=500, warmup_steps=100).notes() == []


def test_classify_json_lines_empty_label_and_model_template(capsys):
    import json

    code, out, err = run_main(capsys, "classify", str(IMAGES), "--labels", "", "blue circle", "--model", DEMO, "--json")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == len(list(IMAGES.glob("*.png"))) and {r["label"] for r in records[0]["results"]} == {
        "",
        "blue circle",
    }
    # No --template: the demo model's own "a {}" (config.json) gives the scores of --template "a {}".
    own = {r["image"]: r["results"] for r in records}
    run_main(capsys, "classify", str(IMAGES), "--labels", "", "blue circle", "--model", DEMO, "--json")
    code, out, _ = run_main(
        capsys, "classify", str(IMAGES), "--labels", "", "blue circle", "--model", DEMO, "--json", "--template", "a {}"
    )
    assert {json.loads(line)["image"]: json.loads(line)["results"] for line in out.splitlines()} == own
    assert_input_error(capsys, "classify", IMAGE, "--labels", " , ", "--model", DEMO, mentions="--labels")
