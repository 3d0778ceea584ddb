#!/usr/bin/env bash
# End-to-end benchmark (not a test): a whole database of TABLES small
# tables (default 1,000; a foreign-key chain of 20 rows each), three
# partitioned tables and three large objects, the test suite's shape
# (tests/integration/connections.rs), copied on a throwaway server started
# with max_connections = 30, in the same run, by:
#   1. etl run pipelines/postgres-database.toml with WORKERS workers (4)
#   2. pgcopydb clone --table-jobs WORKERS --index-jobs WORKERS
# Prints each one's wall time and the most sessions it held at once on
# the server (pg_stat_activity sampled every 0.1 s, the sampler's own
# session left out), and whether it finished; every table of both
# targets is then compared with the source (row count and a checksum).
#
#   scripts/bench-many.sh            TABLES=300 WORKERS=2 scripts/bench-many.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tables=${TABLES:-1000}; workers=${WORKERS:-4}

scripts/install-deps.sh --bench
cargo build --release --locked -q
etl=${CARGO_TARGET_DIR:-$PWD/target}/release/etl

dir=$(mktemp -d); chmod 755 "$dir"
trap 'kill "${sampler:-0}" 2>/dev/null || true; scripts/pg-tmp.sh stop "$dir/pg"; rm -rf "$dir"' EXIT
url=$(scripts/pg-tmp.sh start "$dir/pg" -c max_connections=30 -c shared_buffers=512MB -c max_wal_size=4GB)
base=${url%/postgres}

psql -X -q "$url" -c "CREATE DATABASE src"
echo "bench-many: generating $tables tables..." >&2
psql -X -q -v ON_ERROR_STOP=1 "$base/src" >/dev/null <<SQL
DO \$\$ BEGIN
  FOR i IN 1..$tables LOOP
    EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, parent int %s, v text)', i,
      CASE WHEN i > 1 THEN format('REFERENCES t%s (id)', i - 1) ELSE '' END);
    EXECUTE format('INSERT INTO t%s SELECT g, %s, md5(g::text || %L) FROM generate_series(1, 20) g', i,
      CASE WHEN i > 1 THEN 'g' ELSE 'NULL' END, i);
  END LOOP;
  FOR i IN 1..3 LOOP
    EXECUTE format('CREATE TABLE p%s (at date NOT NULL, n int) PARTITION BY RANGE (at)', i);
    EXECUTE format('CREATE TABLE p%s_2024 PARTITION OF p%s FOR VALUES FROM (''2024-01-01'') TO (''2025-01-01'')', i, i);
    EXECUTE format('CREATE TABLE p%s_2025 PARTITION OF p%s FOR VALUES FROM (''2025-01-01'') TO (''2026-01-01'')', i, i);
    EXECUTE format('INSERT INTO p%s SELECT date ''2024-06-01'' + g, g FROM generate_series(1, 400) g', i);
  END LOOP;
END \$\$;
SELECT lo_from_bytea(91001, 'first object'), lo_from_bytea(91002, 'second'), lo_from_bytea(91003, decode('00ff10', 'hex'));
VACUUM (ANALYZE);
SQL

# The most sessions open at once (the sampler's own aside), while "$@" runs.
sampled() {
  local peak_file=$dir/peak
  echo 0 >"$peak_file"
  (
    peak=0
    while true; do
      n=$(psql -X -Atq "$url" -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()" 2>/dev/null || echo 0)
      if [ "$n" -gt "$peak" ]; then peak=$n; echo "$peak" >"$peak_file"; fi
      sleep 0.1
    done
  ) &
  sampler=$!
  local t0 status=0
  t0=$(date +%s.%N)
  "$@" || status=$?
  elapsed=$(echo "$(date +%s.%N) - $t0" | bc)
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  peak=$(cat "$peak_file")
  return $status
}

pipeline=$PWD/pipelines/postgres-database.toml
sed "s/^workers = 2$/workers = $workers/" "$pipeline" >"$dir/many.toml"
run_etl() {
  (cd "$dir" && ETL_SRC_URL=$base/src ETL_DST_URL=$base/dst_etl "$etl" -q run "$dir/many.toml" >"$dir/etl-summary.txt" 2>"$dir/etl.log")
}
run_pgcopydb() {
  pgcopydb clone --source "$base/src" --target "$base/dst_pgcopydb" --dir "$dir/pgcopydb" \
    --table-jobs "$workers" --index-jobs "$workers" --no-owner --no-acl >"$dir/pgcopydb.log" 2>&1
}

results=()
for tool in etl pgcopydb; do
  psql -X -q "$url" -c "CREATE DATABASE dst_$tool"
  if sampled "run_$tool"; then outcome=finished; else outcome="FAILED (exit $?)"; fi
  echo "bench-many: $tool: $elapsed s, peak $peak sessions, $outcome" >&2
  results+=("$(printf '%-48s %9.1f %14s  %s' "$tool" "$elapsed" "$peak" "$outcome")")
done

echo "bench-many: comparing every table with the source..." >&2
sum() { psql -X -Atq "$base/$1" -c "SELECT coalesce(string_agg(c.relname || ':' || (xpath('/row/s/text()', query_to_xml(format('SELECT count(*) || md5(coalesce(string_agg(t::text, '','' ORDER BY t::text), '''')) AS s FROM ONLY public.%I t', c.relname), false, true, '')))[1]::text, ' ' ORDER BY c.relname), '') FROM pg_class c WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace" 2>/dev/null || echo "unreadable"; }
want=$(sum src)
equal=()
for tool in etl pgcopydb; do
  if [ "$(sum "dst_$tool")" = "$want" ]; then equal+=("$tool equal"); else equal+=("$tool DIFFERS"); fi
done

printf '\nbench-many: %s tables (+3 partitioned in 2, 3 large objects), max_connections = 30, %s workers\n' "$tables" "$workers"
printf '%-48s %9s %14s  %s\n' "tool" "seconds" "peak sessions" "outcome"
for r in "${results[@]}"; do echo "$r"; done
echo "targets against the source: ${equal[*]}"
grep 'connections' "$dir/etl-summary.txt" || true
