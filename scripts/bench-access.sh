#!/usr/bin/env bash
# End-to-end benchmark (not a test) of the Access sources: one table of an
# Access file loaded on the same throwaway server, same run, into three
# empty databases by
#   1. etl run, `[source] type = "access"` (the file read natively, jetdb),
#   2. etl run, `[source] type = "odbc"` through the MDBTools driver,
#   3. `mdb-schema ... postgres | psql` then `mdb-export | psql \copy`,
# each ROUNDS times (default 5; the sample tables are small, so the medians
# matter more than one round). The three tables are compared (count, and an
# md5 over every row with numbers at the same scale and floats as real:
# mdb-schema makes Currency numeric(15,2) and MDBTools widens Single), and
# the medians and rows/s printed.
#
#   scripts/bench-access.sh [FILE [TABLE]]
#     defaults: $ETL_FIXTURES/access/nwind.mdb (../shared/fixtures),
#     "Order Details" (its largest table)
file=${1:-${ETL_FIXTURES:-$(cd "$(dirname "$0")/.." && pwd)/../shared/fixtures}/access/nwind.mdb}
table=${2:-Order Details}
file=$(realpath "$file")
set --
. "$(dirname "$0")/bench-lib.sh"
rounds=${ROUNDS:-5}
command -v mdb-export >/dev/null || { echo "bench-access.sh: mdbtools is not installed" >&2; exit 2; }
lower=$(printf '%s' "$table" | tr '[:upper:]' '[:lower:]')

pipeline() { # NAME SOURCE-LINES DB
  cat > "$dir/$1.toml" <<TOML
name = "bench-$1"
[source]
$2
tables = ["$table"]
[chunks]
workers = 2
failed_csv = "$dir/failed-$1.csv"
[[sinks]]
type = "postgres"
url = "$base/$3"
table = "public.{table}"
create_table = true
TOML
}
pipeline native "type = \"access\"
path = \"$file\"" dst_native
pipeline odbc "type = \"odbc\"
connection_string = \"Driver={MDBTools};DBQ=$file;\"
encoding = \"utf-8\"" dst_odbc

fresh() {
  for db in dst_native dst_odbc dst_export; do
    psql -X -q "$url" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  done
}
timed() { local t0; t0=$(date +%s.%N); "$@"; echo "$(date +%s.%N) - $t0" | bc; }
run_native() { (cd "$dir" && "$etl" -q run "$dir/native.toml" >"$dir/native-summary.txt"); }
run_odbc() { (cd "$dir" && "$etl" -q run "$dir/odbc.toml" >"$dir/odbc-summary.txt"); }
run_export() {
  mdb-schema --no-indexes --no-relations --no-comments -T "$table" "$file" postgres | psql -X -q -v ON_ERROR_STOP=1 "$base/dst_export" >/dev/null
  mdb-export -D '%Y-%m-%d %H:%M:%S' "$file" "$table" \
    | psql -X -q -v ON_ERROR_STOP=1 "$base/dst_export" -c "\\copy \"$lower\" FROM STDIN WITH (FORMAT csv, HEADER true)"
}

native_times=(); odbc_times=(); export_times=()
for r in $(seq 1 "$rounds"); do
  fresh
  n=$(timed run_native); o=$(timed run_odbc); x=$(timed run_export)
  native_times+=("$n"); odbc_times+=("$o"); export_times+=("$x")
  echo "bench-access: round $r: native ${n} s, MDBTools ODBC ${o} s, mdb-export | psql ${x} s" >&2
done

# Every row as text, numbers at scale 4 and floats as real, in order.
digest() { # DB TABLE
  local cols
  cols=$(psql -X -Atq "$base/$1" -c "SELECT string_agg(CASE WHEN data_type IN ('real', 'double precision') THEN format('%I::real::text', column_name) WHEN data_type = 'numeric' THEN format('%I::numeric(30,4)::text', column_name) ELSE format('%I::text', column_name) END, ', ' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_schema = 'public' AND table_name = '$2'")
  psql -X -Atq "$base/$1" -c "SELECT count(*) || ' rows, md5 ' || md5(string_agg(r, '|' ORDER BY r)) FROM (SELECT concat_ws(',', $cols) AS r FROM public.\"$2\") t"
}
a=$(digest dst_native "$table"); b=$(digest dst_odbc "$table"); c=$(digest dst_export "$lower")
[ "$a" = "$b" ] || { echo "bench-access: the MDBTools route's table differs from the native one's: $b vs $a" >&2; exit 1; }
[ "$a" = "$c" ] || { echo "bench-access: mdb-export's table differs from the native one's: $c vs $a" >&2; exit 1; }

rows=${a%% rows*}
nm=$(median "${native_times[@]}"); om=$(median "${odbc_times[@]}"); xm=$(median "${export_times[@]}")
echo
echo "Access table \"$table\" of $(basename "$file") ($(du -h "$file" | cut -f1)): $rows rows, medians of $rounds rounds, $(nproc) cores, PostgreSQL $(psql -X -Atq "$url" -c 'SHOW server_version')"
echo "Tables equal: $a"
printf 'etl, native (jetdb)      %7.3f s  (%s rows/s)\n' "$nm" "$(echo "$rows / $nm" | bc)"
printf 'etl, MDBTools ODBC       %7.3f s  (%s rows/s)\n' "$om" "$(echo "$rows / $om" | bc)"
printf 'mdb-export | psql COPY   %7.3f s  (%s rows/s)\n' "$xm" "$(echo "$rows / $xm" | bc)"
printf 'native vs MDBTools ODBC  %7.2fx\n' "$(echo "scale=4; $om / $nm" | bc)"
printf 'native vs mdb-export     %7.2fx\n' "$(echo "scale=4; $xm / $nm" | bc)"
grep -E 'peak memory' "$dir/native-summary.txt" | sed 's/^ */etl native /'
