#!/usr/bin/env bash
# Installs what etl needs on Debian, skipping what is already there.
#
#   scripts/install-deps.sh          the build and the main job (scripts/demo.sh):
#                                    gcc for the crates that build C, unixODBC's
#                                    library and headers (odbc-api links libodbc),
#                                    mold (the linker .cargo/config.toml names),
#                                    PostgreSQL 15 for the throwaway server,
#                                    openssl for its certificates
#   scripts/install-deps.sh --tests  and what the tests and benchmarks need: the
#                                    ODBC drivers (psqlODBC, SQLite3, MDBTools,
#                                    FreeTDS), sqlite3, mdbtools, python3 (CP949
#                                    bytes by its codec), bc, chromium for the
#                                    test that renders `etl status --html`, and
#                                    pyarrow from PyPI, the tests' independent
#                                    Parquet reader
#   scripts/install-deps.sh --bench  and the tools the benchmarks time etl beside:
#                                    pgloader, pgcopydb, and polars and
#                                    ConnectorX from PyPI
set -euo pipefail

packages=(gcc libc6-dev unixodbc unixodbc-dev mold postgresql-15 postgresql-client-15 openssl)
tests=0
bench=0
case "${1:-}" in
  "") ;;
  --tests) tests=1 ;;
  --bench) tests=1; bench=1 ;;
  *) echo "install-deps: unknown argument $1 (none, --tests or --bench)" >&2; exit 2 ;;
esac
[ $tests = 0 ] || packages+=(odbc-postgresql libsqliteodbc odbc-mdbtools mdbtools tdsodbc sqlite3 python3 python3-pip bc chromium)
[ $bench = 0 ] || packages+=(pgloader pgcopydb)
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
# pip_install MODULE...: the Python modules not importable yet, from PyPI.
pip_install() {
  local wanted=()
  for m in "$@"; do python3 -c "import $m" 2>/dev/null || wanted+=("$m"); done
  [ ${#wanted[@]} -gt 0 ] || return 0
  echo "install-deps: installing ${wanted[*]} (pip)" >&2
  python3 -m pip install --quiet --root-user-action=ignore "${wanted[@]}" || python3 -m pip install --quiet --user "${wanted[@]}"
}
[ $tests = 0 ] || pip_install pyarrow
[ $bench = 0 ] || pip_install polars connectorx
# Debian's package starts a cluster of its own on 5432; etl's scripts use
# throwaway clusters on free ports and leave that one alone.
if ! command -v cargo >/dev/null; then
  echo "install-deps: cargo is not on PATH; install Rust (rustup) first" >&2
  exit 2
fi
