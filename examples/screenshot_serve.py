"""Regenerate the docs' screenshots of the `siglip serve` web page (docs/serve_screenshot.png, serve_zero_shot.png).

Runs the browser test (tests/test_serve_browser.py: the demo model, a collection of examples/images/, headless
Chromium from `make browser`) with SIGLIP_SCREENSHOT_DIR=docs, so the pictures are what the test checked.

    python examples/screenshot_serve.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    env = {**os.environ, "SIGLIP_SCREENSHOT_DIR": str(ROOT / "docs"), "CI": "true"}  # CI: fail, never skip
    command = [sys.executable, "-m", "pytest", "-q", str(ROOT / "tests" / "test_serve_browser.py")]
    sys.exit(subprocess.call(command, cwd=ROOT, env=env))
