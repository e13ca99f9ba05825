# ploneintranet.asynctasks: the two commands are `make test` and `make run`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install redis-server postgresql rabbitmq-server haproxy chromium libreoffice lint i18n dist-check test run run-zeo stop clean docs bench bench-push bench-previews buildout-check faults

help:
	@echo "make test   install everything needed (venv, constraints, redis-server, rabbitmq-server, haproxy,"
	@echo "           chromium) and run the tests"
	@echo "make run    start Plone, Redis and a Celery worker under supervisor (Ctrl-C stops)"
	@echo "make run-zeo  start the production-like server under supervisor: ZEO, a frontend and a"
	@echo "              worker Plone instance, HAProxy routing jobs, a Celery worker per queue, Flower"
	@echo "make stop   stop what 'make run' or 'make run-zeo' started"
	@echo "make lint   ruff check, ruff format --check and check-manifest (part of make test)"
	@echo "make i18n   extract the messages into locales/*.pot and merge them into the .po files (scripts/i18n.py)"
	@echo "make dist-check  build sdist and wheel, install the wheel into a new venv and import it"
	@echo "make docs   build the Sphinx documentation into docs/_build/html (warnings are errors)"
	@echo "make bench  benchmark real processes (about 15 minutes): prints the table of targets,"
	@echo "            writes var/bench.json (docs/benchmarks.rst); BENCH_ARGS=--smoke for a quick run"
	@echo "make bench-push  one push server holding 1,000 sockets: publish-to-delivery latency (docs/push.rst)"
	@echo "make bench-previews  seconds from upload to preview on screen: image, PDF, docx (docs/push.rst)"
	@echo "make faults  the fault matrix (about 6 minutes): ZEO and RelStorage, two instances behind HAProxy,"
	@echo "            two Celery workers, saves while a part fails; prints the table (docs/deployment.rst)"
	@echo "make buildout-check  run buildout.cfg in build/buildout (10-11 minutes from scratch, about 1 with"
	@echo "            the eggs kept there), start bin/instance, check it answers (README: Deploying with buildout)"

# The add-on, and the benchmarks of make bench: a development package of the
# checkout (benchmarks/), never in the wheel.
$(STAMP): pyproject.toml benchmarks/pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else "Python 3.10 to 3.13 is needed; run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade -c constraints.txt pip setuptools wheel
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,run,lint]'
	$(BIN)/pip install --quiet -c constraints.txt -e ./benchmarks
	touch $(STAMP)

install: $(STAMP)

redis-server:
	@if command -v redis-server >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "redis-server is missing: installing it with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	else \
	  echo "redis-server is missing: run 'sudo apt-get install redis-server' (Debian/Ubuntu) and try again" >&2; exit 1; \
	fi

# The broker of tests/test_rabbitmq.py (each test run makes a vhost of its own
# with rabbitmqctl): the RabbitMQ that answers on 127.0.0.1:5672, else Debian's
# rabbitmq-server, installed and started.
rabbitmq-server:
	@if $(PYTHON) -c 'import socket; socket.create_connection(("127.0.0.1", 5672), 2).close()' 2>/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  if [ ! -x /usr/sbin/rabbitmq-server ]; then \
	    echo "rabbitmq-server is missing: installing it with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null; \
	  fi; \
	  echo "starting rabbitmq-server"; \
	  service rabbitmq-server start >/dev/null 2>&1 || (rabbitmq-server -detached >/dev/null 2>&1 &); \
	  /usr/sbin/rabbitmqctl await_startup --timeout 120 >/dev/null; \
	else \
	  echo "RabbitMQ does not answer on 127.0.0.1:5672: run 'sudo apt-get install rabbitmq-server' (Debian/Ubuntu), start it and try again" >&2; exit 1; \
	fi

# The database of tests/test_routing.py's RelStorage instances (each run makes
# and drops a database of its own): the PostgreSQL that answers on
# 127.0.0.1:5432, else Debian's postgresql, installed and started, trusting
# the local postgres user over 127.0.0.1 (a development machine's setting).
postgresql:
	@if $(PYTHON) -c 'import socket; socket.create_connection(("127.0.0.1", 5432), 2).close()' 2>/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "PostgreSQL does not answer on 127.0.0.1:5432: installing and starting Debian's postgresql"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  for hba in /etc/postgresql/*/main/pg_hba.conf; do \
	    grep -q "^host all postgres 127.0.0.1/32 trust" $$hba || sed -i '1i host all postgres 127.0.0.1/32 trust' $$hba; \
	  done; \
	  service postgresql start >/dev/null 2>&1 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; \
	else \
	  echo "PostgreSQL does not answer on 127.0.0.1:5432: run 'sudo apt-get install postgresql', start it and try again" >&2; exit 1; \
	fi

# The reverse proxy of `make run-zeo` and tests/test_routing.py.
haproxy:
	@if command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "haproxy is missing: installing it with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; \
	else \
	  echo "haproxy is missing: run 'sudo apt-get install haproxy' (Debian/Ubuntu) and try again" >&2; exit 1; \
	fi

# The browser of tests/test_push_browser.py, driven by the playwright package
# (which is not allowed to download a browser of its own); pdftoppm comes along
# for PDF previews.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "chromium is missing: installing it (and poppler-utils) with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium poppler-utils >/dev/null; \
	else \
	  echo "chromium is missing: run 'sudo apt-get install chromium poppler-utils' (Debian/Ubuntu) and try again" >&2; exit 1; \
	fi

# LibreOffice for the previews of Office and OpenDocument files (previews/office.py,
# tests/test_office_previews.py): Debian's packages without the desktop.
libreoffice:
	@if command -v soffice >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "soffice is missing: installing LibreOffice (Writer, Calc, Impress; no GUI) with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui >/dev/null; \
	else \
	  echo "soffice is missing: run 'sudo apt-get install --no-install-recommends libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui' (Debian/Ubuntu) and try again" >&2; exit 1; \
	fi

test: install redis-server rabbitmq-server postgresql haproxy chromium libreoffice lint
	$(BIN)/pytest

# The fault matrix of docs/deployment.rst ("When one machine is not enough"):
# on ZEO, then on RelStorage (a PostgreSQL cluster of its own, made with
# initdb), two Plone instances behind HAProxy, two Celery workers and a
# client saving Images while the worker instance, Redis, a Celery worker or
# the database server fails; prints the table, fails if a job is lost or a
# save refused. FAULTS_ARGS="--databases zeo --faults broker" runs a part.
faults: install redis-server postgresql haproxy
	$(BIN)/python scripts/fault_matrix.py $(FAULTS_ARGS)

lint: install
	$(BIN)/ruff check src scripts benchmarks
	$(BIN)/ruff format --check src scripts benchmarks
	@# news/: every fragment is of a kind towncrier knows (it ignores the others
	@# silently); make docs renders them, warnings as errors (news/README.rst)
	@if ls news | grep -Ev '^README\.rst$$|\.(breaking|feature|bugfix|internal|documentation|tests)(\.[0-9]+)?$$'; then \
	  echo "news/: the fragments above have no known kind; name them <issue>.<kind>, see news/README.rst" >&2; exit 1; \
	fi
	$(BIN)/check-manifest --no-build-isolation --quiet

# The translations (i18ndude): the .pot from the code, templates, ZCML and
# profiles, merged into every .po; lists what is left to translate. tests/test_i18n.py checks they agree.
i18n: install
	$(BIN)/python scripts/i18n.py

# Build the sdist and the wheel, list the wheel (no benchmarks in it), install
# the wheel into a new venv, import it.
dist-check: install
	rm -rf dist build/dist-venv
	$(BIN)/python -m build --no-isolation --outdir dist .
	$(BIN)/python -m zipfile -l dist/*.whl
	@if $(BIN)/python -m zipfile -l dist/*.whl | grep -i benchmark; then \
	  echo "the wheel contains the benchmarks (listed above): they belong in benchmarks/, outside src/" >&2; exit 1; \
	fi
	$(PYTHON) -m venv build/dist-venv
	build/dist-venv/bin/pip install --quiet -c constraints.txt dist/*.whl
	cd build && dist-venv/bin/python -c 'import ploneintranet.asynctasks.core, ploneintranet.asynctasks.celerytasks as c; print("imported", c.app.main, "from", ploneintranet.asynctasks.core.__file__)'
	ls dist

run: install redis-server
	$(BIN)/python scripts/devserver.py run

# Redis is not installed here: like production, run-zeo expects a system service.
run-zeo: install haproxy
	$(BIN)/pip install --quiet -c constraints.txt -e '.[zeo]'
	$(BIN)/python scripts/devserver.py run-zeo

docs: install
	@if command -v dot >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "graphviz (dot) is missing: installing it with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; \
	else \
	  echo "graphviz (dot) is missing: run 'sudo apt-get install graphviz' (Debian/Ubuntu) and try again" >&2; exit 1; \
	fi
	$(BIN)/pip install --quiet -c constraints.txt -e '.[docs]'
	@# docs/changes.rst: the next release's notes, from news/ (towncrier)
	mkdir -p docs/_build && $(BIN)/towncrier build --draft --version 1.0.0 --date unreleased > docs/_build/unreleased.rst
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

# BENCH_ARGS="--broker sentinel" or "--broker rabbitmq": the same on that broker
# (RabbitMQ: a vhost of its own on the local server, started if need be).
bench: install redis-server $(if $(findstring rabbitmq,$(BENCH_ARGS)),rabbitmq-server)
	$(BIN)/python -m asynctasks_benchmarks $(BENCH_ARGS)

# buildout.cfg for sysadmins who deploy with zc.buildout: run it in build/
# (own venv, eggs kept for the next run), check bin/instance answers HTTP and
# bin/celery, bin/supervisord run. rm -rf build/buildout* starts from scratch.
buildout-check:
	$(PYTHON) scripts/buildout_check.py $(BUILDOUT_CHECK_ARGS)

# One push server holding 1,000 open sockets (docs/push.rst); var/bench-push.json.
bench-push: install redis-server
	$(BIN)/python -m asynctasks_benchmarks.push $(BENCH_PUSH_ARGS)

# Seconds from upload to preview on screen (docs/push.rst); var/bench-previews.json.
bench-previews: install redis-server chromium libreoffice
	$(BIN)/python -m asynctasks_benchmarks.previews $(BENCH_PREVIEWS_ARGS)

stop:
	@if [ -x $(BIN)/python ]; then $(BIN)/python scripts/devserver.py stop; fi

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache
