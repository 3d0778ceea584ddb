#!/usr/bin/env bash
# End-to-end benchmark (not a test) of the narrow-to-wide pivot on the
# standard fleet data set (4 ships x 250 channels x 10,080 minutes =
# 10,080,000 readings), on one throwaway server, in the same run:
#   1. in the database: per ship, CREATE TABLE wide_<ship> (...) and
#      INSERT INTO wide_<ship> SELECT created_time, max(<value>) FILTER
#      (WHERE data_channel_id = 'ch_x') AS ch_x, ... GROUP BY created_time
#   2. etl run: the pivot stage (typed columns, 24 h chunks per ship,
#      2 workers) into wide tables in another database
#   3. ConnectorX + polars (scripts/polars_pivot.py): the readings read
#      into a data frame, pivoted per ship with polars `pivot`, each wide
#      table written with COPY (installed from PyPI when missing)
# and prints both times, the speedup, etl's peak memory, and checks that
# both sides' tables are equal (count + md5 of every row).
#
#   scripts/bench-pivot.sh [SHIPS CHANNELS MINUTES]     defaults: 4 250 10080
#   ROUNDS=3 scripts/bench-pivot.sh                     repeat, alternating order
. "$(dirname "$0")/bench-lib.sh"
for db in src dst_etl dst_pl; do psql -X -q "$url" -c "CREATE DATABASE $db"; done
echo "bench-pivot: generating $rows readings ($ships ships x $channels channels x $minutes minutes)..." >&2
psql -X -q -v ON_ERROR_STOP=1 "$base/src" -v ships="$ships" -v channels="$channels" -v minutes="$minutes" -f fixtures/sql/timeseries.sql
size=$(psql -X -Atq "$base/src" -c "SELECT pg_size_pretty(pg_total_relation_size('tenant.tbl_data_timeseries'))")

# The in-database pivot, one CREATE + INSERT ... GROUP BY per ship, generated from the data.
psql -X -Atq -v ON_ERROR_STOP=1 "$base/src" >"$dir/pivot.sql" <<'SQL'
WITH k AS (SELECT DISTINCT data_channel_id AS ch, value_format AS f FROM tenant.tbl_data_timeseries),
     s AS (SELECT DISTINCT ship_id FROM tenant.tbl_data_timeseries)
SELECT format('DROP TABLE IF EXISTS indb.%I; CREATE TABLE indb.%I (created_time timestamptz PRIMARY KEY%s); '
              'INSERT INTO indb.%I SELECT created_time%s FROM tenant.tbl_data_timeseries WHERE ship_id = %L GROUP BY created_time;',
              'wide_' || ship_id, 'wide_' || ship_id,
              (SELECT string_agg(format(', %I %s', ch, CASE f WHEN 'Boolean' THEN 'boolean' WHEN 'Integer' THEN 'bigint' WHEN 'String' THEN 'text' ELSE 'double precision' END), '' ORDER BY ch) FROM k),
              'wide_' || ship_id,
              (SELECT string_agg(format(', %s FILTER (WHERE data_channel_id = %L)',
                        CASE f WHEN 'Boolean' THEN 'bool_or(bool_v)' WHEN 'Integer' THEN 'max(long_v)' WHEN 'String' THEN 'max(str_v COLLATE "C")' ELSE 'max(double_v)' END, ch), '' ORDER BY ch) FROM k),
              ship_id)
FROM s ORDER BY ship_id;
SQL

cat >"$dir/pivot.toml" <<'TOML'
name = "bench-pivot"
[source]
type = "postgres"
url = "${ETL_SRC_URL}"
table = "tenant.tbl_data_timeseries"
[chunks]
time_column = "created_time"
interval = "24h"
key_column = "ship_id"
workers = 2
[[transforms]]
type = "pivot"
index = ["created_time"]
name_column = "data_channel_id"
format_column = "value_format"
values = { Decimal = "double_v", Integer = "long_v", String = "str_v", Boolean = "bool_v" }
[[sinks]]
type = "postgres"
url = "${ETL_DST_URL}"
table = "wide.wide_{key}"
mode = "upsert"
create_table = true
TOML

reset() {
  psql -X -q "$base/src" -c "SET client_min_messages = warning" -c "DROP SCHEMA IF EXISTS indb CASCADE" -c "CREATE SCHEMA indb" -c "CHECKPOINT"
  psql -X -q "$base/dst_etl" -c "SET client_min_messages = warning" -c "DROP SCHEMA IF EXISTS wide CASCADE" -c "DROP SCHEMA IF EXISTS etl CASCADE" -c "CHECKPOINT"
  psql -X -q "$base/dst_pl" -c "SET client_min_messages = warning" -c "DROP SCHEMA IF EXISTS pl CASCADE" -c "CREATE SCHEMA pl" -c "CHECKPOINT"
}

run_polars() {
  local t0; t0=$(date +%s.%N)
  python3 scripts/polars_pivot.py "$base/src" "$base/dst_pl" pl
  echo "$(date +%s.%N) - $t0" | bc
}

run_indb() {
  local t0; t0=$(date +%s.%N)
  psql -X -q -v ON_ERROR_STOP=1 "$base/src" -f "$dir/pivot.sql"
  echo "$(date +%s.%N) - $t0" | bc
}

run_etl() {
  local t0; t0=$(date +%s.%N)
  (cd "$dir" && ETL_SRC_URL=$base/src ETL_DST_URL=$base/dst_etl "$etl" -q run "$dir/pivot.toml" >"$dir/etl-summary.txt")
  echo "$(date +%s.%N) - $t0" | bc
}

indb_times=(); etl_times=(); pl_times=()
for r in $(seq 1 "$rounds"); do
  reset
  if [ $((r % 2)) = 1 ]; then i=$(run_indb); e=$(run_etl); else e=$(run_etl); i=$(run_indb); fi
  p=$(run_polars)
  indb_times+=("$i"); etl_times+=("$e"); pl_times+=("$p")
  echo "bench-pivot: round $r: in-database ${i} s, etl ${e} s, connectorx+polars ${p} s" >&2
done

# Both sides' tables, row for row (columns are in channel order on both).
for ship in $(psql -X -Atq "$base/src" -c "SELECT DISTINCT ship_id FROM tenant.tbl_data_timeseries ORDER BY 1"); do
  q="SELECT count(*) || ' rows, md5 ' || md5(string_agg(t::text, '|' ORDER BY created_time)) FROM %s t"
  a=$(psql -X -Atq "$base/src" -c "$(printf "$q" "indb.\"wide_$ship\"")")
  b=$(psql -X -Atq "$base/dst_etl" -c "$(printf "$q" "wide.\"wide_$ship\"")")
  [ "$a" = "$b" ] || { echo "bench-pivot: $ship differs: in-database $a, etl $b" >&2; exit 1; }
  c=$(psql -X -Atq "$base/dst_pl" -c "$(printf "$q" "pl.\"wide_$ship\"")")
  [ "$a" = "$c" ] || { echo "bench-pivot: $ship differs: in-database $a, polars $c" >&2; exit 1; }
done

im=$(median "${indb_times[@]}"); em=$(median "${etl_times[@]}"); pm=$(median "${pl_times[@]}")
echo
echo "Standard data set: $rows readings, source table $size, $(nproc) cores, PostgreSQL $(psql -X -Atq "$url" -c 'SHOW server_version')"
echo "Wide tables equal on all three sides (last: $a)"
printf 'in-database pivot      %8.2f s  (%s readings/s)\n' "$im" "$(echo "$rows / $im" | bc)"
printf 'etl run (pivot)        %8.2f s  (%s readings/s)\n' "$em" "$(echo "$rows / $em" | bc)"
printf 'connectorx + polars    %8.2f s  (%s readings/s)\n' "$pm" "$(echo "$rows / $pm" | bc)"
printf 'speedup in-db/etl      %8.2f  (target: >= 6)\n' "$(echo "scale=4; $im / $em" | bc)"
printf 'speedup polars/etl     %8.2f  (target: >= 2.5)\n' "$(echo "scale=4; $pm / $em" | bc)"
grep -E 'peak memory|rows' "$dir/etl-summary.txt" | sed 's/^ */etl /'
