# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test dev-setup bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

dev-setup: $(STAMP)
	$(BIN)/mitrity-llm-gateway dev-setup --dir var

run: dev-setup
	@echo
	@echo "Point your agents at the gateway:"
	@echo "  export ANTHROPIC_BASE_URL=https://127.0.0.1:8443"
	@echo "  export OPENAI_BASE_URL=https://127.0.0.1:8443/v1"
	@echo "  export SSL_CERT_FILE=$(CURDIR)/var/certs/ca.crt"
	@echo "and send the development key (var/dev-api-key) in the x-mitrity-api-key header."
	@echo
	MITRITY_CONFIG=config/gateway.yaml $(BIN)/gunicorn -c gunicorn.conf.py gateway.wsgi

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench.proxy_overhead

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis *.egg-info
