#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit and integration tests (the HTTP integration
# tests twice: on SQLite and on PostgreSQL), then the dashboard's end-to-end tests in headless
# Chromium (Debian's /usr/bin/chromium; .ci/run installs it and the PostgreSQL server).
# The interoperability tests verify real deliveries with the official Python `standardwebhooks`
# package, so this script keeps a virtual environment with it in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import standardwebhooks' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check 'standardwebhooks>=1.0'
fi
export TIDINGS_TEST_PYTHON="$PWD/.venv/bin/python"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# One throwaway PostgreSQL cluster (127.0.0.1, a free port, a temp dir) for every test process of
# this run; it stops and is deleted when this script exits.
if [ -z "${TIDINGS_TEST_POSTGRES_URL:-}" ]; then
  cargo build -p tidings-testkit --bin throwaway-postgres --locked
  eval "$(target/debug/throwaway-postgres --watch $$)"
fi

if cargo nextest --version >/dev/null 2>&1; then
  # The project has no doctests, so nextest (which skips them) runs everything.
  cargo nextest run --workspace --locked --no-fail-fast
  TIDINGS_TEST_BACKEND=postgres cargo nextest run -p tidings --test it --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
  TIDINGS_TEST_BACKEND=postgres cargo test -p tidings --test it --locked --no-fail-fast
fi

# The dashboard in a real browser against the real binary: the one the integration tests above ran
# (`cargo build -p tidings` alone would compile 30 of its dependencies again, with other features).
if [ ! -x target/debug/tidings ]; then
  echo "error: target/debug/tidings was not built by the integration tests" >&2
  exit 1
fi
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "error: the dashboard tests need Chromium at /usr/bin/chromium (apt-get install -y chromium)" >&2
  exit 1
fi
(cd e2e && npm ci --no-audit --no-fund --loglevel=error && npm test)
