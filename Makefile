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

.PHONY: install test lint docs lint-imports demo browser interop-test fuzz aarch64-check
install: $(BIN)/.installed

# torch.compile's kernel cache in this checkout (.cache/inductor), not the machine-wide /tmp one: a compiled
# kernel half-written by another process sharing that cache aborted the suite ("file too short", then SIGABRT).
test: install
	TORCHINDUCTOR_CACHE_DIR=$${TORCHINDUCTOR_CACHE_DIR:-$(CURDIR)/.cache/inductor} $(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks

# The import contract of pyproject.toml's [tool.importlinter]: cli > services > runtime > model > kernels > I/O.
lint-imports: install
	$(BIN)/lint-imports

# The documentation site (docs/, mkdocs.yml) into site/, warnings as errors: a broken link, anchor or API
# reference fails the build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

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

# The open_clip / timm oracle of the checkpoint formats (tests/interop/), in a venv of its own: open_clip needs
# torchvision, which does not import beside .venv's CPU torch 2.13.0. torch 2.14.1 + torchvision 0.29.1 install
# from this machine's local wheels; siglip goes in editable, with torch pinned so that pip keeps it.
INTEROP := .venv-interop
$(INTEROP)/bin/.installed: pyproject.toml
	$(PY) -m venv $(INTEROP)
	$(INTEROP)/bin/pip install -q --upgrade pip
	$(INTEROP)/bin/pip install -q torch==2.14.1 torchvision==0.29.1
	$(INTEROP)/bin/pip install -q open_clip_torch==3.3.0 timm==1.0.31 transformers==5.25.0 protobuf pytest
	$(INTEROP)/bin/pip install -q -e . torch==2.14.1
	touch $@

interop-test: $(INTEROP)/bin/.installed
	$(INTEROP)/bin/python -m pytest -q tests/interop

# siglip's fp32 / bf16 / int8-refusal smoke test on an arm64 Debian under qemu emulation (root; slow: ~12 min the
# first time, ~2.5 min after; not part of `make test`); state in .cache/aarch64-root. See docs/aarch64.md.
aarch64-check: install
	bash tools/aarch64_check.sh
