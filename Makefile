# Every target creates the virtual environment first, so each works on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/fedchain testnet up 4

# The dashboard's browser test drives Debian's chromium (Playwright uses it; it downloads no browser).
# Installing needs root and Debian's archive; where that fails the test is skipped, loudly.
test: $(STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "WARNING: Debian's chromium could not be installed; tests/integration/test_dashboard.py will be SKIPPED"
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q

# Benchmarks also need Flower (an optional extra) and Fashion-MNIST from Debian's package.
bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	test -d /usr/share/datasets/fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)
	$(PY) -m bench all

clean:
	rm -rf $(VENV) build *.egg-info
