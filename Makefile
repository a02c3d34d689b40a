PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORPUS := .cache/corpus
DEMO_MODEL := models/efficientnet_lite0.64.onnx
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: install demo test test-all corpus corpus-keras bench docs lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,converters,openvino]'
	touch $(STAMP)

$(DEMO_MODEL): $(STAMP) converters/export_backbones.py
	$(BIN)/python converters/export_backbones.py efficientnet_lite0 --exporter legacy17 --size 64 --out-dir models --name efficientnet_lite0.64.onnx

$(FASHION):
	apt-get install -y -q dataset-fashion-mnist || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }

demo: $(DEMO_MODEL) $(FASHION)
	$(BIN)/onnxmtl demo --model $(DEMO_MODEL) --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not gpu" -n 2 -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

corpus: $(STAMP)
	$(BIN)/python converters/export_backbones.py all --exporter all --out-dir $(CORPUS)

# Keras applications through tf2onnx, channels-last; TensorFlow lives in .cache/keras-venv only.
corpus-keras: $(STAMP)
	$(BIN)/python converters/export_keras.py all

bench: $(STAMP)
	$(BIN)/python benchmarks/load_lower.py
	$(BIN)/python benchmarks/compile_search.py
	$(BIN)/python benchmarks/renormalize.py
	$(BIN)/python benchmarks/derive_export.py
	$(BIN)/python benchmarks/latency_budget.py

# The documentation site (docs/, mkdocs.yml) into site/; README's evidence table regenerated first.
docs: $(STAMP)
	$(BIN)/python tools/docs_gen.py readme
	$(BIN)/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports && $(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .cache .pytest_cache runs
