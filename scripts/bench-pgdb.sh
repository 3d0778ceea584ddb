#!/usr/bin/env bash
# End-to-end benchmark (not a test): a whole PostgreSQL database of ROWS
# rows (default 10,000,000) over five tables (fixtures/sql/bench_database.sql:
# one partitioned by quarter, btree and GIN indexes, foreign keys) copied
# to another database of the same throwaway server, in the same run, by:
#   1. pgcopydb clone --table-jobs 2 --index-jobs 2
#   2. pg_dump -Fd -j 2 then pg_restore -j 2 (--no-owner --no-acl)
#   3. etl run pipelines/postgres-database.toml (2 workers)
# Prints each wall time (the median of ROUNDS, default 1; the order of
# the three turns each round, every target dropped and made anew before
# each), etl's peak memory and etl's ratio to each; every table of the
# three targets is then compared with the source (row count and a
# checksum over every row). The source is vacuumed and analyzed once
# after it is generated, as a live database is: otherwise whichever tool
# reads it first pays for its hint bits and races autovacuum.
#
#   scripts/bench-pgdb.sh            ROWS=2000000 ROUNDS=3 scripts/bench-pgdb.sh
. "$(dirname "$0")/bench-lib.sh"
total=${ROWS:-10000000}
psql -X -q "$url" -c "CREATE DATABASE src"
echo "bench-pgdb: generating $total rows..." >&2
start=$(date +%s.%N)
psql -X -q -v ON_ERROR_STOP=1 "$base/src" -v rows="$total" -f fixtures/sql/bench_database.sql
echo "bench-pgdb: generated in $(echo "$(date +%s.%N) - $start" | bc) s, $(psql -X -Atq "$base/src" -c "SELECT pg_size_pretty(pg_database_size('src'))")" >&2
psql -X -q "$base/src" -c "VACUUM (ANALYZE)" -c "CHECKPOINT"

timed() { local t0; t0=$(date +%s.%N); "$@"; echo "$(date +%s.%N) - $t0" | bc; }
run_pgcopydb() {
  rm -rf "$dir/pgcopydb"
  pgcopydb clone --source "$base/src" --target "$base/dst_pgcopydb" --dir "$dir/pgcopydb" \
    --table-jobs 2 --index-jobs 2 --no-owner --no-acl >"$dir/pgcopydb.log" 2>&1 \
    || { tail -20 "$dir/pgcopydb.log" >&2; exit 1; }
}
run_dump() {
  rm -rf "$dir/dump"
  pg_dump -Fd -j 2 --no-owner --no-acl -f "$dir/dump" "$base/src"
  pg_restore -j 2 --no-owner --no-acl -d "$base/dst_dump" "$dir/dump"
}
pipeline=$PWD/pipelines/postgres-database.toml
run_etl() {
  (cd "$dir" && ETL_SRC_URL=$base/src ETL_DST_URL=$base/dst_etl "$etl" -q run "$pipeline" >"$dir/etl-summary.txt") \
    || { cat "$dir/etl-summary.txt" >&2; exit 1; }
}

fresh() {
  PGOPTIONS="-c client_min_messages=warning" psql -X -q "$url" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" -c "CHECKPOINT"
}
etl_times=(); pgcopydb_times=(); dump_times=()
tools=(etl pgcopydb dump)
for r in $(seq 1 "$rounds"); do
  line="bench-pgdb: round $r:"
  for i in 0 1 2; do
    tool=${tools[$(((i + r - 1) % 3))]}
    fresh "dst_$tool"
    t=$(timed "run_$tool")
    eval "${tool}_times+=(\"\$t\")"
    line="$line $tool ${t} s,"
  done
  echo "${line%,}" >&2
done
e=$(median "${etl_times[@]}"); c=$(median "${pgcopydb_times[@]}"); d=$(median "${dump_times[@]}")

echo "bench-pgdb: comparing every table with the source..." >&2
tables=$(psql -X -Atq "$base/src" -c "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY 1")
sum() { psql -X -Atq "$base/$1" -c "SELECT count(*) || ' ' || coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::int8::numeric), 0) FROM ONLY $2 t"; }
for t in $tables; do
  want=$(sum src "$t")
  for db in dst_etl dst_pgcopydb dst_dump; do
    got=$(sum "$db" "$t")
    [ "$got" = "$want" ] || { echo "bench-pgdb: $db $t differs: $got vs $want" >&2; exit 1; }
  done
done
indexes() { psql -X -Atq "$base/$1" -c "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND i.indisvalid"; }
peak=$(grep 'peak memory' "$dir/etl-summary.txt" | awk '{print $3, $4}')
printf '\nbench-pgdb: %s rows, 5 tables (one partitioned in 4), %s valid indexes on each side (source %s, etl %s, pgcopydb %s, dump %s)\n' \
  "$total" "$(indexes src)" "$(indexes src)" "$(indexes dst_etl)" "$(indexes dst_pgcopydb)" "$(indexes dst_dump)"
printf '%-44s %10s %10s\n' "tool" "seconds" "etl / it"
echo "median of $rounds round(s), order turning each round"
printf '%-44s %10.1f %10s\n' "etl run (2 workers)" "$e" "1.00"
printf '%-44s %10.1f %10.2f\n' "pgcopydb clone --table-jobs 2 --index-jobs 2" "$c" "$(echo "$e / $c" | bc -l)"
printf '%-44s %10.1f %10.2f\n' "pg_dump -Fd -j 2 + pg_restore -j 2" "$d" "$(echo "$e / $d" | bc -l)"
echo "etl peak memory: $peak; every table equal on the three targets."
