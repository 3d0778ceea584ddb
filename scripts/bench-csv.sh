#!/usr/bin/env bash
# End-to-end benchmark (not a test) of the CSV source: the standard fleet
# data set (4 ships x 250 channels x 10,080 minutes = 10,080,000 rows)
# written as one CSV file by `psql \copy ... TO ... CSV HEADER` (about
# 800 MB), then loaded on the same throwaway server, same run, into three
# identical empty tables (same primary key) by
#   1. psql -c "\copy tenant.tbl_data_timeseries FROM file CSV HEADER"
#      (the server parses),
#   2. etl run (the CSV source, byte ranges of 1,000,000 records, 2 workers),
#   3. pgloader's CSV loader.
# The three tables are compared (count and an md5 over every row), and the
# times, rows/s, etl's peak memory and the ratios printed.
#
#   scripts/bench-csv.sh [SHIPS CHANNELS MINUTES]     defaults: 4 250 10080
#   ROUNDS=3 scripts/bench-csv.sh                     medians of 3 rounds
. "$(dirname "$0")/bench-lib.sh"
for db in src dst_copy dst_etl dst_pgl; do psql -X -q "$url" -c "CREATE DATABASE $db"; done
echo "bench-csv: generating $rows rows..." >&2
psql -X -q -v ON_ERROR_STOP=1 "$base/src" -v ships="$ships" -v channels="$channels" -v minutes="$minutes" -f fixtures/sql/timeseries.sql
csv=$dir/readings.csv
psql -X -q "$base/src" -c "\\copy (SELECT * FROM tenant.tbl_data_timeseries) TO '$csv' WITH (FORMAT csv, HEADER true)"
echo "bench-csv: $(du -h "$csv" | cut -f1) CSV file" >&2

cat > "$dir/csv.toml" <<TOML
name = "bench-csv"
[source]
type = "csv"
path = "$csv"
[source.columns]
created_time = "timestamptz"
bool_v = "boolean"
long_v = "bigint"
double_v = "double precision"
str_v = "text"
[chunks]
workers = 2
failed_csv = "$dir/failed.csv"
[[sinks]]
type = "postgres"
url = "$base/dst_etl"
table = "tenant.tbl_data_timeseries"
TOML
cat > "$dir/pgloader.load" <<LOAD
LOAD CSV
  FROM '$csv'
    (ship_id, data_channel_id, created_time, value_format,
     bool_v [null if blanks], str_v [null if blanks], long_v [null if blanks], double_v [null if blanks])
  INTO $base/dst_pgl?tenant.tbl_data_timeseries
    (ship_id, data_channel_id, created_time, value_format, bool_v, str_v, long_v, double_v)
  WITH skip header = 1, fields optionally enclosed by '"', fields escaped by double-quote, fields terminated by ','
  SET work_mem to '64MB';
LOAD

empty_targets() {
  for db in dst_copy dst_etl dst_pgl; do
    PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 "$base/$db" -v ships=0 -v channels=0 -v minutes=0 -f fixtures/sql/timeseries.sql
    psql -X -q "$base/$db" -c "SET client_min_messages = warning" -c "DROP SCHEMA IF EXISTS etl CASCADE" -c "CHECKPOINT"
  done
}
timed() { local t0; t0=$(date +%s.%N); "$@"; echo "$(date +%s.%N) - $t0" | bc; }
run_copy() { psql -X -q "$base/dst_copy" -c "\\copy tenant.tbl_data_timeseries FROM '$csv' WITH (FORMAT csv, HEADER true)" >&2; }
run_etl() { (cd "$dir" && "$etl" -q run "$dir/csv.toml" >"$dir/etl-summary.txt"); }
run_pgl() { pgloader --quiet "$dir/pgloader.load" >"$dir/pgloader.out" 2>&1 || { cat "$dir/pgloader.out" >&2; exit 1; }; }

copy_times=(); etl_times=(); pgl_times=()
for r in $(seq 1 "$rounds"); do
  empty_targets
  c=$(timed run_copy); e=$(timed run_etl); p=$(timed run_pgl)
  copy_times+=("$c"); etl_times+=("$e"); pgl_times+=("$p")
  echo "bench-csv: round $r: \\copy ${c} s, etl ${e} s, pgloader ${p} s" >&2
done

q="SELECT count(*) || ' rows, md5 ' || md5(string_agg(md5(t::text), '' ORDER BY ship_id, created_time, data_channel_id)) FROM tenant.tbl_data_timeseries t"
a=$(psql -X -Atq "$base/dst_copy" -c "$q"); b=$(psql -X -Atq "$base/dst_etl" -c "$q"); g=$(psql -X -Atq "$base/dst_pgl" -c "$q")
[ "$a" = "$b" ] || { echo "bench-csv: etl's table differs from \\copy's: $b vs $a" >&2; exit 1; }
[ "$a" = "$g" ] || { echo "bench-csv: pgloader's table differs from \\copy's: $g vs $a" >&2; exit 1; }

cm=$(median "${copy_times[@]}"); em=$(median "${etl_times[@]}"); pm=$(median "${pgl_times[@]}")
echo
echo "CSV data set: $rows rows, $(du -h "$csv" | cut -f1) file, target primary key: yes, $(nproc) cores, PostgreSQL $(psql -X -Atq "$url" -c 'SHOW server_version')"
echo "Tables equal: $a"
printf 'psql \\copy FROM CSV  %8.2f s  (%s rows/s)\n' "$cm" "$(echo "$rows / $cm" | bc)"
printf 'etl run              %8.2f s  (%s rows/s)\n' "$em" "$(echo "$rows / $em" | bc)"
printf 'pgloader             %8.2f s  (%s rows/s)\n' "$pm" "$(echo "$rows / $pm" | bc)"
printf 'ratio etl/\\copy time  %8.2f  (<= 1.0: etl is at least as fast)\n' "$(echo "scale=4; $em / $cm" | bc)"
printf 'etl vs pgloader      %8.2fx pgloader'"'"'s rows/s\n' "$(echo "scale=4; $pm / $em" | bc)"
grep -E 'peak memory|bytes' "$dir/etl-summary.txt" | sed 's/^ */etl /'
