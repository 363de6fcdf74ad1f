# One command for the main job (`make demo`: the world, the embedded model and the default compression
# sweep) and one for the tests (`make test`).
# Each creates .venv, installs torch (CPU build 2.13.0 first, so no CUDA build is pulled) and explore.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
OUT    ?= out/demo

.PHONY: install test demo clean

$(BIN)/explore: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[test,serve,ptq]"
	touch $(BIN)/explore

install: $(BIN)/explore

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/explore world export --out $(OUT)/world --n 32 --seed 0 --format jsonl
	HF_HUB_OFFLINE=1 $(BIN)/explore world export --out $(OUT)/vlrewardbench --n 32 --seed 0 --format vlrewardbench
	HF_HUB_OFFLINE=1 $(BIN)/explore world show --out $(OUT)/contact_sheet.png --n 16 --seed 0
	HF_HUB_OFFLINE=1 $(BIN)/explore ask $(OUT)/world/images/test-000000.png "What colour is the triangle?"
	HF_HUB_OFFLINE=1 $(BIN)/explore caption $(OUT)/world/images --out $(OUT)/captions.jsonl
	HF_HUB_OFFLINE=1 $(BIN)/explore score-world --model embedded --split test --n 200 --out $(OUT)/scores.json
	HF_HUB_OFFLINE=1 $(BIN)/explore sweep --output-dir $(OUT)/sweep

clean:
	rm -rf $(VENV) out
