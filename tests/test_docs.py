"""The README and the pages under docs/ stay true: every relative link reaches a file (and, with `#`, a heading of
it), every page is in the site's nav, and the README's cheap offline commands and snippets run as written.

`make docs` (mkdocs build --strict) checks the site as MkDocs renders it; this test checks the same files as
GitHub shows them (the README's links, anchors by GitHub's rules) and runs what the front page tells users to type.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")

# The README commands run here, each named by how it starts (each must match exactly one README command):
# offline, seconds each on the demo model. Serving, training, Hub ids, int8 calibration and GPU ones are not run.
RUN = [
    "siglip --help",
    "siglip doctor",
    'siglip classify examples/images --labels "red square, blue circle, green star"',
    "siglip embed examples/images --out shapes.npy",
    "siglip embed examples/images --out shapes.emb",
    'siglip search shapes.emb "a red square"',
    "siglip convert models/siglip-demo-shapes --to open_clip",
    "siglip classify examples/images/red_square.png --model demo-open_clip/",
]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def heading_text(line: str) -> str:
    text = line.lstrip("#").strip()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's words
    return text.replace("`", "")


def github_slug(text: str) -> str:
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def mkdocs_slug(text: str) -> str:
    """Python-Markdown's toc slugify (what MkDocs uses)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path, slug) -> set[str]:
    found: set[str] = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        if re.match(r"#{1,6} ", line):
            base = slug(heading_text(line))
            name, n = base, 0
            while name in found:  # repeated headings get -1, -2, ...
                n += 1
                name = f"{base}_{n}" if slug is mkdocs_slug else f"{base}-{n}"
            found.add(name)
    return found


def relative_links(path: Path) -> list[str]:
    links = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        line = re.sub(r"`[^`]*`", "", line)  # a link shown as code is not a link
        links += [target for target in LINK.findall(line) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]
    return links


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_reach_a_file_and_heading(page: Path):
    slug = github_slug if page == README else mkdocs_slug
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved, slug):
            broken.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_every_page_is_in_the_site_and_the_readme_stays_a_front_page():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    missing = [p.name for p in PAGES[1:] if not re.search(rf"(^|\s){re.escape(p.name)}\s*$", nav, flags=re.M)]
    assert not missing, f"docs pages not in mkdocs.yml's nav: {missing}"
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 260, (
        "README.md is a front page: move detail to docs/"
    )


def readme_commands() -> list[str]:
    """The README's shell commands: continuation lines joined, trailing comments dropped."""
    commands = []
    for block in code_blocks(README.read_text(encoding="utf-8"), "bash"):
        for command in block.replace("\\\n", " ").splitlines():
            command = strip_comment(command).strip()
            if command:
                commands.append(re.sub(r"\s+", " ", command))
    return commands


def strip_comment(line: str) -> str:
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scratch copy of what the commands read (examples/images; the demo model linked, only read), so that what
    they write lands outside the checkout."""
    work = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "examples" / "images", work / "examples" / "images")
    (work / "models").symlink_to(ROOT / "models", target_is_directory=True)
    return work


def run_shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def test_readme_commands_run_as_written(workdir: Path):
    commands = readme_commands()
    chosen = []
    for start in RUN:
        matches = [command for command in commands if command.startswith(start)]
        assert len(matches) == 1, f"the README should show one command starting {start!r}, found {matches}"
        chosen.append(matches[0])
    outputs = {}
    for command in chosen:  # in README order, so that later commands find what earlier ones wrote
        result = outputs[command] = run_shell(command, workdir)
        assert result.returncode == 0, (
            f"{command}\nexit {result.returncode}\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
        assert result.stdout.strip(), f"{command} printed nothing"
        assert "Traceback" not in result.stderr, f"{command}\n{result.stderr[-2000:]}"
    assert (workdir / "shapes.npy").is_file() and (workdir / "shapes.emb" / "state.json").is_file()
    search = next(command for command in chosen if command.startswith("siglip search"))
    assert "red_square.png" in outputs[search].stdout.splitlines()[1]  # rank 1 under the query line


def test_readme_python_snippets_run(workdir: Path, monkeypatch):
    """The zero-shot snippet (from the repository root) and the Index snippet (after the commands above wrote
    shapes.emb; if that test did not run, it is written here)."""
    blocks = code_blocks(README.read_text(encoding="utf-8"), "python")
    zero_shot = next(block for block in blocks if "pipeline(" in block)
    index = next(block for block in blocks if "Index.open" in block)
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    exec(compile(zero_shot.replace("\nclassify(", "\nresult = classify(", 1), "README", "exec"), scope)
    assert scope["result"][0]["label"] == "red square"
    if not (workdir / "shapes.emb" / "state.json").is_file():
        assert (
            run_shell(
                "siglip embed examples/images --out shapes.emb --model models/siglip-demo-shapes", workdir
            ).returncode
            == 0
        )
    monkeypatch.chdir(workdir)
    scope = {}
    exec(compile(index.replace("\nindex.search_text(", "\nhits = index.search_text(", 1), "README", "exec"), scope)
    assert Path(scope["hits"][0].path).name == "red_square.png"


@pytest.mark.skipif(
    "avx2" not in (Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""),
    reason="the README's excerpt is an x86 CPU with AVX2, capped to it",
)
def test_readme_doctor_excerpt_is_what_doctor_prints_on_avx2():
    """The README's `siglip doctor` excerpt for an AVX2-only CPU: every line of it is in doctor's output there."""
    text = README.read_text(encoding="utf-8")
    excerpt = re.search(r"What `siglip doctor` says on an AVX2-only CPU.*?^```\n(.*?)^```", text, flags=re.S | re.M)
    assert excerpt is not None, "the README lost its doctor excerpt"
    caps = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    printed = subprocess.run(
        [sys.executable, "-m", "siglip", "doctor"],
        env={**os.environ, **caps},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.splitlines()
    missing = [line for line in excerpt.group(1).splitlines() if line.strip() and line not in printed]
    assert not missing, missing
