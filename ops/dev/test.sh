#!/usr/bin/env bash
# The test command: sets up everything on a fresh machine, then runs the checks and the suite.
#   - a virtualenv in .venv with the package (strict editable install) and its dev tools;
#   - Prosody and ejabberd (Debian packages) for the XMPP tests, installed when missing;
#   - a fresh PostgreSQL database `pubsub_cache_test_<pid>` on the local server (started if
#     down), dropped on exit, unless PUBSUB_CACHE_TEST_POSTGRES_URL already names one;
#   - ruff, mypy --strict (package and tests), then pytest with any arguments given.
set -euo pipefail
cd "$(dirname "$0")/../.."

# shellcheck source=ops/dev/setup.sh
source ops/dev/setup.sh  # log, as_root, apt_install, setup_venv, setup_prosody

log "Python environment (.venv)"
setup_venv

log "Prosody"
setup_prosody
dpkg-query -W prosody 2>/dev/null || true

log "ejabberd"
setup_ejabberd
dpkg-query -W ejabberd 2>/dev/null || true

if [ -z "${PUBSUB_CACHE_TEST_POSTGRES_URL:-}" ]; then
    log "PostgreSQL"
    if ! command -v pg_lsclusters >/dev/null; then
        apt_install postgresql
    fi
    if ! pg_isready -q -h 127.0.0.1 -p 5432; then
        version=$(pg_lsclusters --no-header | awk 'NR==1 {print $1}')
        if [ -z "$version" ]; then
            version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
            as_root pg_createcluster "$version" main
        fi
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
        for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
    fi
    admin_url=${PUBSUB_CACHE_TEST_POSTGRES_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
    # One database per run (dropped on exit): two runs on one machine never drop each other's.
    database="pubsub_cache_test_$$"
    pg_admin() {
        .venv/bin/python - "$admin_url" "$1" "$database" <<'PY'
import sys

import psycopg

url, action, name = sys.argv[1:]
with psycopg.connect(url, autocommit=True) as connection:
    connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if action == "create":
        connection.execute(f'CREATE DATABASE "{name}"')
        print(f"fresh database {name} created")
PY
    }
    pg_admin create
    trap 'pg_admin drop' EXIT
    export PUBSUB_CACHE_TEST_POSTGRES_URL="${admin_url%/*}/$database"
fi

log "ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

log "mypy --strict"
.venv/bin/mypy -p pubsub_cache
.venv/bin/mypy tests

log "pytest"
.venv/bin/pytest "$@"
