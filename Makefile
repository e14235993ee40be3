# Two entry points for a fresh clone: `make test` and `make demo`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel of torch these machines carry; a looser spec would pull a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

.PHONY: install test lint demo browser fuzz
install: $(BIN)/.installed

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks

demo: install
	$(BIN)/python examples/demo.py

# Headless Chromium + chromedriver for tests/test_serve_browser.py (Debian packages; needs root, as on CI).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)

# Fuzzing with large, seeded counts (not part of `make test` or CI, which run small counts):
# the API schema fuzz (schemathesis over /openapi.json, positive and negative cases) against a demo-model server;
# the image mutation fuzz (generic and EXIF-only mutants of real photos through every image entry point, ~15 min).
fuzz: install
	$(BIN)/python tests/fuzz_api.py --max-examples 300 --seed 0 --time-budget 1800
	$(BIN)/python tests/fuzz_images.py --count 30000 --seed 0
