#!/usr/bin/env bash
# End-to-end benchmark of an ODBC source: a SQLite file of ROWS rows
# (default 1,000,000) with mixed columns (integer key, double, text with
# Korean, timestamp, boolean) loaded into PostgreSQL by `etl` over the
# SQLite3 ODBC driver and by `pgloader` from the same file, same server,
# same run. Both loads create the table, copy the rows and add the primary
# key; both results are compared (count and a checksum over every column).
# Prints each side's time, rows/s and the throughput ratio etl/pgloader.
# etl reads with StepAPI=1 (the driver streams instead of holding the
# whole result), max_text_bytes = 4096 (the longest note is 40 bytes;
# MAX_TEXT_BYTES=65536 measures the default) and readers = 2 (two reader
# processes, each a half of the id range; READERS=1 measures one).
# Usage: ROWS=1000000 ROUNDS=1 READERS=2 scripts/bench-odbc.sh
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
n=${ROWS:-1000000}
command -v pgloader >/dev/null || { echo "bench-odbc.sh: pgloader is not installed (apt install pgloader)" >&2; exit 2; }

db="$dir/bench.sqlite"
sqlite3 "$db" <<SQL
CREATE TABLE readings (
  id INTEGER PRIMARY KEY,
  ship_id INTEGER NOT NULL,
  value DOUBLE,
  note TEXT,
  taken_at TIMESTAMP,
  ok BOOLEAN
);
WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $n)
INSERT INTO readings
SELECT i, i % 250, i * 0.25 - 1000.5,
       CASE i % 4 WHEN 0 THEN '선박 ' || i WHEN 1 THEN 'engine ' || i || ' 똠' WHEN 2 THEN NULL ELSE 'Éclair #' || i END,
       datetime(1748736000 + i * 7, 'unixepoch'),
       i % 3 = 0
FROM s;
SQL
echo "SQLite file: $n rows, $(du -h "$db" | cut -f1)"

cat > "$dir/odbc.toml" <<TOML
name = "bench-odbc"
[source]
type = "odbc"
connection_string = "Driver={SQLite3};Database=$db;StepAPI=1"
tables = ["readings"]
max_text_bytes = ${MAX_TEXT_BYTES:-4096}
readers = ${READERS:-2}
[chunks]
failed_csv = "$dir/failed.csv"
[[sinks]]
type = "postgres"
url = "$base/etl_side"
table = "public.{table}"
create_table = true
TOML

# A checksum over every column, the same text on both sides.
check() {
  psql -X -qAt "$base/$1" -c "SELECT count(*) || ' ' || md5(string_agg(concat_ws('|', id, ship_id, value, note, to_char(taken_at, 'YYYY-MM-DD HH24:MI:SS'), ok::int), ',' ORDER BY id)) FROM readings"
}

etl_times=(); pgl_times=()
for round in $(seq "$rounds"); do
  for side in etl_side pgloader_side; do
    psql -X -q "$url" -c "DROP DATABASE IF EXISTS $side" -c "CREATE DATABASE $side"
  done
  start=$(date +%s.%N)
  "$etl" -q run "$dir/odbc.toml" > "$dir/etl.out"
  etl_t=$(echo "$(date +%s.%N) - $start" | bc)
  start=$(date +%s.%N)
  pgloader --quiet "sqlite://$db" "$base/pgloader_side" > "$dir/pgloader.out" 2>&1 || { cat "$dir/pgloader.out"; exit 1; }
  pgl_t=$(echo "$(date +%s.%N) - $start" | bc)
  a=$(check etl_side); b=$(check pgloader_side)
  [ "$a" = "$b" ] || { echo "the two loads differ: etl $a, pgloader $b" >&2; exit 1; }
  echo "round $round: etl ${etl_t} s, pgloader ${pgl_t} s, tables equal ($a)"
  etl_times+=("$etl_t"); pgl_times+=("$pgl_t")
done
e=$(median "${etl_times[@]}"); p=$(median "${pgl_times[@]}")
printf 'etl      %8.2f s  %10.0f rows/s\n' "$e" "$(echo "$n / $e" | bc -l)"
printf 'pgloader %8.2f s  %10.0f rows/s\n' "$p" "$(echo "$n / $p" | bc -l)"
printf 'ratio (etl throughput / pgloader throughput): %.2f\n' "$(echo "$p / $e" | bc -l)"
grep -E "rows|peak" "$dir/etl.out" || true
