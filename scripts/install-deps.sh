#!/usr/bin/env bash
# Installs what etl's build, tests, demo and benchmarks need on Debian:
# PostgreSQL 15, unixODBC with its drivers (psqlODBC, SQLite3, MDBTools,
# FreeTDS), mold for fast links, openssl for the test server's certificates,
# chromium for the test that renders `etl status --html`; pyarrow from PyPI
# for the tests' independent Parquet reader. Skips what is already there.
set -euo pipefail

packages=(postgresql-15 postgresql-client-15 unixodbc unixodbc-dev odbc-postgresql libsqliteodbc
          odbc-mdbtools mdbtools tdsodbc mold sqlite3 python3 bc openssl chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# pyarrow: the independent Parquet reader the tests check etl's files with.
if ! python3 -c "import pyarrow" 2>/dev/null; then
  echo "install-deps: installing pyarrow (pip)" >&2
  python3 -m pip install --quiet --root-user-action=ignore pyarrow || python3 -m pip install --quiet --user pyarrow
fi
# Debian's package starts a cluster of its own on 5432; etl's scripts use
# throwaway clusters on free ports and leave that one alone.
if ! command -v cargo >/dev/null; then
  echo "install-deps: cargo is not on PATH; install Rust (rustup) first" >&2
  exit 2
fi
