# Two commands do all set-up on a fresh machine:
#   make demo   sorts the built-in synthetic recording (writes pykilosort_demo/)
#   make test   runs the test suite
# Both create the virtualenv .venv and install pykilosort into it first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= test

.PHONY: demo test install clean

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=64" wheel
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/pykilosort demo --output pykilosort_demo

test: $(VENV)/.installed
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build dist *.egg-info pykilosort_demo
