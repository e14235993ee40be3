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
