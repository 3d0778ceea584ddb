# Shared set-up of the end-to-end benchmarks, sourced by scripts/bench-*.sh
# with their arguments: [SHIPS CHANNELS MINUTES] (defaults 4 250 10080),
# ROUNDS (default 1), ETL_BUILD_FLAGS. Installs what they need
# (install-deps.sh --bench: the tools timed beside etl too) and builds etl (release), starts a
# throwaway server (durable defaults, fsync on; a larger WAL so checkpoints
# do not dominate either side) that is stopped on exit, and sets: ships
# channels minutes rounds rows etl dir url base. Defines median.
set -euo pipefail
cd "$(dirname "$0")/.."
ships=${1:-4}; channels=${2:-250}; minutes=${3:-10080}; rounds=${ROUNDS:-1}
rows=$((ships * channels * minutes))

scripts/install-deps.sh --bench
# ETL_BUILD_FLAGS=--no-default-features: the build scripts/demo.sh makes.
cargo build --release --locked -q ${ETL_BUILD_FLAGS:-}
etl=${CARGO_TARGET_DIR:-$PWD/target}/release/etl

dir=$(mktemp -d); chmod 755 "$dir"
trap 'scripts/pg-tmp.sh stop "$dir/pg"; rm -rf "$dir"' EXIT
url=$(scripts/pg-tmp.sh start "$dir/pg" -c shared_buffers=1GB -c max_wal_size=8GB -c checkpoint_timeout=30min)
base=${url%/postgres}

# The median of the arguments.
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
