#!/usr/bin/env bash
# End-to-end benchmark of an ODBC source: SQLite files loaded into
# PostgreSQL by `etl` over the SQLite3 ODBC driver and by `pgloader` from
# the same file, same server, same run; both results compared (count and a
# checksum over every column). Prints each side's time, rows/s and the
# throughput ratio etl/pgloader, per data set:
#
#   1. ROWS rows (default 1,000,000) with mixed columns (integer primary
#      key, double, text with Korean, timestamp, boolean); etl with
#      max_text_bytes = 4096 and readers = READERS (default 2).
#   2. ROWS2 rows (default 10,080,000) in the shape users bring: narrow
#      readings, TEXT columns declared without a length, no integer
#      primary key; etl with default settings (the table is cut into
#      ranges of its rowid, long text columns start with small buffers).
#
# etl reads with StepAPI=1 (the driver streams instead of holding the
# whole result). Usage: ROUNDS=1 SETS="1 2" scripts/bench-odbc.sh
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"

# bench NAME DB TABLE ROWS CHECK_SQL SOURCE_LINES: rounds of etl and
# pgloader into fresh databases, tables compared, medians printed.
bench() {
  local name=$1 db=$2 table=$3 n=$4 check_sql=$5 source_lines=$6
  cat > "$dir/odbc.toml" <<TOML
name = "bench-odbc"
[source]
type = "odbc"
connection_string = "Driver={SQLite3};Database=$db;StepAPI=1"
tables = ["$table"]
$source_lines
[chunks]
failed_csv = "$dir/failed.csv"
[[sinks]]
type = "postgres"
url = "$base/etl_side"
table = "public.{table}"
create_table = true
TOML
  local etl_times=() pgl_times=() round start etl_t pgl_t a b
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
    a=$(psql -X -qAt "$base/etl_side" -c "$check_sql")
    b=$(psql -X -qAt "$base/pgloader_side" -c "$check_sql")
    [ "$a" = "$b" ] || { echo "$name: the two loads differ: etl $a, pgloader $b" >&2; exit 1; }
    echo "$name round $round: etl ${etl_t} s, pgloader ${pgl_t} s, tables equal ($a)"
    etl_times+=("$etl_t"); pgl_times+=("$pgl_t")
  done
  local e p
  e=$(median "${etl_times[@]}"); p=$(median "${pgl_times[@]}")
  echo "== $name: $n rows, $(du -h "$db" | cut -f1) SQLite file"
  printf 'etl      %8.2f s  %10.0f rows/s\n' "$e" "$(echo "$n / $e" | bc -l)"
  printf 'pgloader %8.2f s  %10.0f rows/s\n' "$p" "$(echo "$n / $p" | bc -l)"
  printf 'ratio (etl throughput / pgloader throughput): %.2f\n' "$(echo "$p / $e" | bc -l)"
  grep -E "chunks|rows|peak" "$dir/etl.out" || true
}

for set in ${SETS:-1 2}; do
  case $set in
  1)
    n=${ROWS:-1000000}
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
    bench "set 1 (integer key)" "$db" readings "$n" \
      "SELECT count(*) || ' ' || md5(string_agg(concat_ws('|', id, ship_id, value, note, to_char(taken_at, 'YYYY-MM-DD HH24:MI:SS'), ok::int), ',' ORDER BY id)) FROM readings" \
      "max_text_bytes = ${MAX_TEXT_BYTES:-4096}
readers = ${READERS:-2}"
    rm -f "$db"
    ;;
  2)
    n=${ROWS2:-10080000}
    db="$dir/narrow.sqlite"
    sqlite3 "$db" <<SQL
CREATE TABLE narrow (
  ship_id TEXT,
  data_channel_id TEXT,
  created_time TIMESTAMP,
  value_format TEXT,
  str_v TEXT,
  double_v REAL
);
WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < $n - 1)
INSERT INTO narrow
SELECT 'IMO' || (9000000 + i % 4), 'ch_' || (i / 4 % 250),
       datetime(1748736000 + (i / 1000) * 60, 'unixepoch'),
       CASE WHEN i % 10 = 0 THEN 'String' ELSE 'Decimal' END,
       CASE WHEN i % 10 = 0 THEN 'state ' || (i % 7) END,
       CASE WHEN i % 10 <> 0 THEN (i % 100000) * 0.25 END
FROM s;
SQL
    bench "set 2 (TEXT without length, no integer key, defaults)" "$db" narrow "$n" \
      "SELECT count(*) || ' ' || sum(hashtext(concat_ws('|', ship_id, data_channel_id, to_char(created_time, 'YYYY-MM-DD HH24:MI:SS'), value_format, str_v, double_v))::numeric) FROM narrow" \
      ""
    rm -f "$db"
    ;;
  esac
done
