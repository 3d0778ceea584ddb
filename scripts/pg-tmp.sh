#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster on 127.0.0.1 and a free port, data in a
# directory of its own. PostgreSQL refuses to run as root, so as root the
# server runs as the unprivileged user `postgres`.
#
#   scripts/pg-tmp.sh start DIR [-c name=value ...]   prints the superuser URL
#   scripts/pg-tmp.sh stop DIR                        stops it and removes DIR
#
# The URL is also written to DIR/url. Extra -c options go to the server.
set -euo pipefail

cmd=${1:?usage: pg-tmp.sh start|stop DIR}
dir=${2:?usage: pg-tmp.sh start|stop DIR}
shift 2

bindir=$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || true)
if [ -z "$bindir" ]; then
  echo "pg-tmp.sh: PostgreSQL 15 is not installed (no /usr/lib/postgresql/15/bin); run scripts/install-deps.sh" >&2
  exit 2
fi

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    runuser -u postgres -- test -w "$dir" || {
      echo "pg-tmp.sh: user postgres cannot reach $dir; make its parent directories traversable (chmod 755)" >&2
      exit 2
    }
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_owner "$bindir/initdb" -D "$dir/data" -U etl --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 2; }
  # Every role is trusted on loopback except etl_password, whose password is
  # checked (scram): the tests of password_env, PGPASSWORD and ~/.pgpass use it.
  { echo "host all etl_password 127.0.0.1/32 scram-sha-256"; cat "$dir/data/pg_hba.conf"; } >"$dir/pg_hba.tmp"
  as_owner cp "$dir/pg_hba.tmp" "$dir/data/pg_hba.conf"
  rm -f "$dir/pg_hba.tmp"
  opts="-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200"
  for o in "$@"; do opts="$opts $o"; done
  as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "$opts" -w -t 60 start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 2; }
  url="postgresql://etl@127.0.0.1:$port/postgres"
  echo "$url" >"$dir/url"
  echo "$url"
  ;;
stop)
  if [ -d "$dir/data" ]; then
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  ;;
*)
  echo "usage: pg-tmp.sh start|stop DIR" >&2
  exit 2
  ;;
esac
