# Each target builds its own virtual environment (.venv) from pyproject.toml on first use.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed

.PHONY: demo test test-full bench browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "tissuefate needs Python 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tissuefate run

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n 2 --durations=15

test-full: $(STAMP)
	TISSUEFATE_FULL=1 $(VENV)/bin/python -m pytest -q -n 2

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/lod.py --n 128 --threads 2

# Headless Chromium for the HTML report check (`tissuefate compare --check`, tests/test_report_html.py).
# Needs root (apt); `test` does not depend on it, the browser test skips without it unless CI is set.
browser:
	@if [ -x /usr/bin/chromium ]; then echo "chromium: $$(/usr/bin/chromium --version 2>/dev/null)"; \
	else apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; fi

clean:
	rm -rf $(VENV) runs
