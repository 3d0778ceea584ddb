#!/usr/bin/env bash
# The main job, on a fresh Debian machine: install what etl needs, build it,
# start a throwaway PostgreSQL on loopback, load a small fleet time series
# (4 ships x 50 channels x 2 days = 576,000 rows), and run
# pipelines/ships-copy.toml: validate, plan, run, then compare source and
# target; then pivot the same readings into one wide table per ship with
# pipelines/ships-pivot.toml. KEEP=1 leaves the server running and prints
# how to reach it.
#
# etl is built without SQL stages (`--no-default-features`: no DataFusion,
# about half the build), so the first run is quick; the demo needs none.
# `cargo build --release --locked` builds the whole etl.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scripts/install-deps.sh
cargo build --release --locked --no-default-features
etl=$PWD/target/release/etl
[ -n "${CARGO_TARGET_DIR:-}" ] && etl=$CARGO_TARGET_DIR/release/etl

dir=$(mktemp -d)
chmod 755 "$dir"
if [ "${KEEP:-0}" != 1 ]; then
  trap '"$root/scripts/pg-tmp.sh" stop "$dir/pg"; rm -rf "$dir"' EXIT
fi
url=$(scripts/pg-tmp.sh start "$dir/pg")
base=${url%/postgres}
psql -X -q "$url" -c "CREATE DATABASE src" -c "CREATE DATABASE dst"
echo "== Loading the demo source (576,000 rows)"
psql -X -q -v ON_ERROR_STOP=1 "$base/src" -v ships=4 -v channels=50 -v minutes=2880 -f fixtures/sql/timeseries.sql

export ETL_SRC_URL=$base/src ETL_DST_URL=$base/dst
cd "$dir"
echo "== etl validate"; "$etl" validate "$root/pipelines/ships-copy.toml"
echo "== etl plan";     "$etl" plan "$root/pipelines/ships-copy.toml"
echo "== etl run";      "$etl" run "$root/pipelines/ships-copy.toml"

echo "== Source and target, count and md5 over the ordered rows"
q="SELECT count(*) || ' rows, md5 ' || md5(string_agg(t::text, '|' ORDER BY ship_id, created_time, data_channel_id)) FROM tenant.tbl_data_timeseries t"
s=$(psql -X -Atq "$ETL_SRC_URL" -c "$q"); d=$(psql -X -Atq "$ETL_DST_URL" -c "$q")
echo "source: $s"; echo "target: $d"
[ "$s" = "$d" ] || { echo "demo: target differs from source" >&2; exit 1; }
echo "== Equal."

echo "== Narrow to wide: etl run pipelines/ships-pivot.toml"
"$etl" run "$root/pipelines/ships-pivot.toml"
echo "== One wide table per ship (rows, columns):"
psql -X -q "$ETL_DST_URL" -c "ANALYZE"
psql -X -Atq "$ETL_DST_URL" -c "SELECT c.relname || ': ' || c.reltuples::bigint || ' rows, ' || c.relnatts || ' columns' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'wide' AND c.relkind = 'r' ORDER BY 1"
psql -X -q "$ETL_DST_URL" -c 'SELECT created_time, ch_0001, ch_0015, ch_0017, ch_0019 FROM wide."tbl_data_timeseries_IMO9900001" ORDER BY created_time LIMIT 3'
if [ "${KEEP:-0}" = 1 ]; then
  echo "Server left running: ETL_SRC_URL=$ETL_SRC_URL ETL_DST_URL=$ETL_DST_URL; stop it with $root/scripts/pg-tmp.sh stop $dir/pg"
fi
echo "== Done. This etl was built without SQL stages, for a quick first run; build the whole one (SQL stages on DataFusion, e.g. pipelines/ships-wide.toml) with: cargo build --release --locked"
