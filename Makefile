# The two set-up commands: `make demo` and `make test`. Each builds .venv from requirements.lock first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv browser lock clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and exactly: a looser spec would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	# the pinned lock through uv (the same wheels, installed in parallel: 23 s against pip's 267 s on this machine,
	# BENCHMARKS.md); pip installs it if uv cannot
	$(BIN)/pip install -q uv==0.13.10 && $(BIN)/uv pip install -q --python $(BIN)/python --no-deps -r requirements.lock \
		|| $(BIN)/pip install -q --no-deps -r requirements.lock
	# vision/audio wheels break `import transformers` beside the CPU torch; text serving does not need them
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/housestyle demo

# The web UI tests drive Debian's Chromium (Playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# Two workers (pytest-xdist): the tests that need the shared vLLM on one, the rest spread over both
# (tests/conftest.py); the models the tests train are built once and shared (tests/fixtures/models.py).
test: $(STAMP) browser
	$(BIN)/python -m pytest -n 2 --dist loadgroup

# Re-pin after changing dependencies in pyproject.toml (run inside a working .venv).
lock:
	$(BIN)/pip freeze --exclude-editable | grep -vE '^(torchvision|torchaudio|torchcodec|housestyle|uv)[= @]' > requirements.lock

clean:
	rm -rf $(VENV)
