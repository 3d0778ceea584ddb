#!/usr/bin/env bash
# The whole test suite: unit tests, the integration tests against a real
# PostgreSQL 15 that this script starts on loopback (and stops), and the
# benches run once each as tests. Installs missing Debian packages first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --tests

# The third-party samples the tests read: ETL_FIXTURES, ../shared/fixtures,
# or fetched (pinned, sha256-checked) into a cache; else stop here, saying
# in one line what to set.
ETL_FIXTURES=$(scripts/fixtures.sh) || exit 1
export ETL_FIXTURES

# Style and lints, where the toolchain has the components (rustup's
# rustfmt and clippy; a toolchain without them skips this, saying so).
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all --check
else
  echo "test.sh: cargo fmt is not installed; style not checked" >&2
fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --locked --workspace --all-targets -q -- -D warnings
  # The code a build without SQL stages leaves out is all in etl-transform.
  cargo clippy --locked -p etl-transform --no-default-features -q -- -D warnings
else
  echo "test.sh: cargo clippy is not installed; lints not checked" >&2
fi

dir=$(mktemp -d)
chmod 755 "$dir"
trap 'scripts/pg-tmp.sh stop "$dir/pg"; rm -rf "$dir"' EXIT
ETL_TEST_PG_URL=$(scripts/pg-tmp.sh start "$dir/pg" -c fsync=off -c synchronous_commit=off -c full_page_writes=off)
export ETL_TEST_PG_URL
# The server's certificates, for the TLS tests.
export ETL_TEST_PG_TLS="$dir/pg/tls"
echo "test.sh: PostgreSQL for the tests at $ETL_TEST_PG_URL" >&2

# etl without SQL stages (no DataFusion), as scripts/demo.sh builds it,
# for the test that runs it: built first and kept aside, since the whole
# etl's build then takes the same path.
cargo build --locked --no-default-features --bin etl -q
cp "${CARGO_TARGET_DIR:-$PWD/target}/debug/etl" "$dir/etl-without-sql"
export ETL_WITHOUT_SQL_BIN="$dir/etl-without-sql"

cargo test --locked --workspace --all-targets "$@"
