#!/usr/bin/env bash
# End-to-end benchmark (not a test): copy the standard fleet data set
# (4 ships x 250 channels x 10,080 minutes = 10,080,000 rows) from one
# database to another on the same throwaway server, in the same run:
#   1. psql -c "COPY (...) TO STDOUT (FORMAT binary)" | psql -c "COPY ... FROM STDIN (FORMAT binary)"
#   2. etl run pipelines/ships-copy.toml (24 h chunks per ship, 2 workers)
#   3. etl run pipelines/table-copy.toml (ranges of 8,192 heap blocks read
#      in physical order, 2 workers)
# into identical empty tables (same primary key), and prints the times,
# etl's peak memory and the ratios. The targets are compared at the end.
# Then etl verify and verify --quick of the etl target, timed beside the copy.
# Then the export side: PostgreSQL's own COPY (...) TO a file (binary)
# beside etl writing the same rows to Parquet (zstd), one file per chunk.
#
#   scripts/bench-copy.sh [SHIPS CHANNELS MINUTES]     defaults: 4 250 10080
#   ROUNDS=3 scripts/bench-copy.sh                     repeat, the order turning each round
#   TARGET_PK=0 scripts/bench-copy.sh                  targets without the primary key (heap only)
. "$(dirname "$0")/bench-lib.sh"
pipeline=$PWD/pipelines/ships-copy.toml
blocks_pipeline=$PWD/pipelines/table-copy.toml
for db in src dst_psql dst_etl dst_blocks; do psql -X -q "$url" -c "CREATE DATABASE $db"; done
echo "bench-copy: generating $rows rows ($ships ships x $channels channels x $minutes minutes)..." >&2
start=$(date +%s.%N)
psql -X -q -v ON_ERROR_STOP=1 "$base/src" -v ships="$ships" -v channels="$channels" -v minutes="$minutes" -f fixtures/sql/timeseries.sql
echo "bench-copy: generated in $(echo "$(date +%s.%N) - $start" | bc) s" >&2
# Settled as a live source is (statistics, hint bits): otherwise round 1's
# first reader pays for the hint bits and races autovacuum.
psql -X -q "$base/src" -c "VACUUM (ANALYZE) tenant.tbl_data_timeseries"
size=$(psql -X -Atq "$base/src" -c "SELECT pg_size_pretty(pg_total_relation_size('tenant.tbl_data_timeseries'))")

empty_targets() {
  for db in dst_psql dst_etl dst_blocks; do
    PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 "$base/$db" -v ships=0 -v channels=0 -v minutes=0 -f fixtures/sql/timeseries.sql
    if [ "${TARGET_PK:-1}" = 0 ]; then
      psql -X -q "$base/$db" -c "ALTER TABLE tenant.tbl_data_timeseries DROP CONSTRAINT tbl_data_timeseries_pkey"
    fi
    psql -X -q "$base/$db" -c "SET client_min_messages = warning" -c "DROP SCHEMA IF EXISTS etl CASCADE" -c "CHECKPOINT"
  done
}

# Each timed run starts from a checkpoint: what an earlier run left dirty
# (about 1.5 GB of heap and WAL) is not written during the next one.
settle() { psql -X -q "$url" -c CHECKPOINT; }

run_psql() {
  local t0 t1
  settle
  t0=$(date +%s.%N)
  psql -X -q "$base/src" -c "COPY (SELECT * FROM tenant.tbl_data_timeseries) TO STDOUT (FORMAT binary)" \
    | psql -X -q "$base/dst_psql" -c "COPY tenant.tbl_data_timeseries FROM STDIN (FORMAT binary)"
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}

# etl run PIPELINE TARGET_DB: the seconds it took.
run_etl() {
  local t0 t1
  settle
  t0=$(date +%s.%N)
  (cd "$dir" && ETL_SRC_URL=$base/src ETL_DST_URL=$base/$2 "$etl" -q run "$1" >"$dir/$2-summary.txt")
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc
}

psql_times=(); etl_times=(); blocks_times=()
for r in $(seq 1 "$rounds"); do
  empty_targets
  # The order turns each round, so each takes each place in turn.
  case $((r % 3)) in
    1) p=$(run_psql); e=$(run_etl "$pipeline" dst_etl); b=$(run_etl "$blocks_pipeline" dst_blocks) ;;
    2) e=$(run_etl "$pipeline" dst_etl); b=$(run_etl "$blocks_pipeline" dst_blocks); p=$(run_psql) ;;
    0) b=$(run_etl "$blocks_pipeline" dst_blocks); p=$(run_psql); e=$(run_etl "$pipeline" dst_etl) ;;
  esac
  psql_times+=("$p"); etl_times+=("$e"); blocks_times+=("$b")
  echo "bench-copy: round $r: psql pipe ${p} s, etl ${e} s, etl by blocks ${b} s" >&2
done

q="SELECT count(*) || ' rows, md5 ' || md5(string_agg(md5(t::text), '' ORDER BY ship_id, created_time, data_channel_id)) FROM tenant.tbl_data_timeseries t"
a=$(psql -X -Atq "$base/dst_psql" -c "$q"); b=$(psql -X -Atq "$base/dst_etl" -c "$q"); c=$(psql -X -Atq "$base/dst_blocks" -c "$q")
[ "$a" = "$b" ] || { echo "bench-copy: targets differ: psql $a, etl $b" >&2; exit 1; }
[ "$a" = "$c" ] || { echo "bench-copy: targets differ: psql $a, etl by blocks $c" >&2; exit 1; }

pm=$(median "${psql_times[@]}"); em=$(median "${etl_times[@]}"); bm=$(median "${blocks_times[@]}")
echo
echo "Standard data set: $rows rows, source table $size, target primary key: $([ "${TARGET_PK:-1}" = 0 ] && echo no || echo yes), $(nproc) cores, PostgreSQL $(psql -X -Atq "$url" -c 'SHOW server_version')"
echo "Targets equal: $a"
printf 'psql binary COPY pipe  %8.2f s  (%s rows/s)\n' "$pm" "$(echo "$rows / $pm" | bc)"
printf 'etl run                %8.2f s  (%s rows/s)\n' "$em" "$(echo "$rows / $em" | bc)"
printf 'ratio etl/psql         %8.2f  (<= 1.0: etl is at least as fast)\n' "$(echo "scale=4; $em / $pm" | bc)"
grep -E 'peak memory|bytes' "$dir/dst_etl-summary.txt" | sed 's/^ */etl /'
printf 'etl run by blocks      %8.2f s  (%s rows/s)\n' "$bm" "$(echo "$rows / $bm" | bc)"
printf 'ratio blocks/psql      %8.2f\n' "$(echo "scale=4; $bm / $pm" | bc)"
grep -E 'peak memory' "$dir/dst_blocks-summary.txt" | sed 's/^ */etl by blocks /'

# Verify, beside the copy it checks: the full comparison (each chunk's
# source COPY data and target rows read at once, hashed row by row) and
# --quick (the target's rows against the checksums recorded at load).
timed_verify() {
  local t0
  t0=$(date +%s.%N)
  (cd "$dir" && ETL_SRC_URL=$base/src ETL_DST_URL=$base/dst_etl "$etl" -q verify "$@" "$pipeline" >"$dir/verify.txt") \
    || { echo "bench-copy: etl verify $* found differences" >&2; cat "$dir/verify.txt" >&2; exit 1; }
  echo "$(date +%s.%N) - $t0" | bc
}
verify_t=$(timed_verify); quick_t=$(timed_verify --quick)
printf 'etl verify             %8.2f s  (ratio to the etl copy %.2f)\n' "$verify_t" "$(echo "scale=4; $verify_t / $em" | bc)"
printf 'etl verify --quick     %8.2f s  (ratio to the etl copy %.2f)\n' "$quick_t" "$(echo "scale=4; $quick_t / $em" | bc)"

# Export: PostgreSQL COPY TO a binary file beside etl to Parquet.
export_pipeline=$dir/export.toml
sed -e 's/^name = .*/name = "bench-export"/' -e '/^\[\[sinks\]\]/,$d' "$pipeline" >"$export_pipeline"
printf '[[sinks]]\ntype = "parquet"\npath = "%s/parquet/{key}/{start}.parquet"\ncompression = "zstd"\n' "$dir" >>"$export_pipeline"
chmod 755 "$dir"
t0=$(date +%s.%N)
psql -X -q "$base/src" -c "COPY (SELECT * FROM tenant.tbl_data_timeseries) TO STDOUT (FORMAT binary)" >"$dir/copy.bin"
copy_t=$(echo "$(date +%s.%N) - $t0" | bc)
t0=$(date +%s.%N)
(cd "$dir" && ETL_SRC_URL=$base/src "$etl" -q run "$export_pipeline" >"$dir/export-summary.txt")
parquet_t=$(echo "$(date +%s.%N) - $t0" | bc)
printf '\nCOPY TO binary file     %8.2f s  (%s)\n' "$copy_t" "$(du -sh "$dir/copy.bin" | cut -f1)"
printf 'etl to Parquet (zstd)  %8.2f s  (%s in %s files)\n' "$parquet_t" "$(du -sh "$dir/parquet" | cut -f1)" "$(find "$dir/parquet" -name '*.parquet' | wc -l)"
printf 'ratio etl/COPY TO      %8.2f\n' "$(echo "scale=4; $parquet_t / $copy_t" | bc)"
grep -E 'peak memory' "$dir/export-summary.txt" | sed 's/^ */etl export /'
