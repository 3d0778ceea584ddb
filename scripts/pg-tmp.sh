#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster on 127.0.0.1 and a free port, data in a
# directory of its own. PostgreSQL refuses to run as root, so as root the
# server runs as the unprivileged user `postgres`.
#
#   scripts/pg-tmp.sh start DIR [-c name=value ...]   prints the superuser URL
#   scripts/pg-tmp.sh restart DIR                     stops it at once (as a crash
#                                                     would) and starts it again
#   scripts/pg-tmp.sh stop DIR                        stops it and removes DIR
#
# The URL is also written to DIR/url. Extra -c options go to the server.
#
# The server speaks TLS with certificates made here in DIR/tls: ca.crt
# (the CA), server.crt (for localhost and 127.0.0.1), client.crt and
# client.key (user etl_cert), other-ca.crt (a CA that signed none of
# them). Role etl_tls may connect only over TLS, etl_cert only with its
# client certificate; every other role is trusted on loopback.
set -euo pipefail

cmd=${1:?usage: pg-tmp.sh start|restart|stop DIR}
dir=${2:?usage: pg-tmp.sh start|restart|stop DIR}
shift 2

bindir=$(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || true)
if [ -z "$bindir" ]; then
  echo "pg-tmp.sh: PostgreSQL 15 is not installed (no /usr/lib/postgresql/15/bin); run scripts/install-deps.sh" >&2
  exit 2
fi

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A CA, a server certificate and a client certificate (EC P-256, 30 days).
make_tls() {
  local t=$1
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -days 30 -subj "/CN=etl test CA" -keyout "$t/ca.key" -out "$t/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -x509 "${ec[@]}" -days 30 -subj "/CN=another CA" -keyout "$t/other-ca.key" -out "$t/other-ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  local name usage cn
  for name in server client; do
    if [ $name = server ]; then
      cn=localhost; usage="subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
    else
      cn=etl_cert; usage="extendedKeyUsage=clientAuth"
    fi
    openssl req "${ec[@]}" -subj "/CN=$cn" -keyout "$t/$name.key" -out "$t/$name.csr" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n%s\n' "$usage" >"$t/$name.ext"
    openssl x509 -req -in "$t/$name.csr" -CA "$t/ca.crt" -CAkey "$t/ca.key" -CAcreateserial -days 30 \
      -extfile "$t/$name.ext" -out "$t/$name.crt" 2>/dev/null
  done
  chmod 600 "$t"/*.key
  chmod 755 "$t"
  chmod 644 "$t"/*.crt
  if [ "$(id -u)" = 0 ]; then chown postgres: "$t/server.key" "$t/server.crt" "$t/ca.crt"; fi
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
  tls="$dir/tls"
  mkdir -p "$tls"
  make_tls "$tls"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_owner "$bindir/initdb" -D "$dir/data" -U etl --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 2; }
  # Every role is trusted on loopback except etl_password, whose password is
  # checked (scram): the tests of password_env, PGPASSWORD and ~/.pgpass use it.
  {
    echo "host all etl_password 127.0.0.1/32 scram-sha-256"
    echo "hostnossl all etl_tls 127.0.0.1/32 reject"
    echo "hostssl all etl_tls 127.0.0.1/32 trust"
    echo "hostnossl all etl_cert 127.0.0.1/32 reject"
    echo "hostssl all etl_cert 127.0.0.1/32 cert"
    cat "$dir/data/pg_hba.conf"
  } >"$dir/pg_hba.tmp"
  as_owner cp "$dir/pg_hba.tmp" "$dir/data/pg_hba.conf"
  rm -f "$dir/pg_hba.tmp"
  opts="-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200"
  opts="$opts -c ssl=on -c ssl_cert_file=$tls/server.crt -c ssl_key_file=$tls/server.key -c ssl_ca_file=$tls/ca.crt"
  for o in "$@"; do opts="$opts $o"; done
  as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "$opts" -w -t 60 start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 2; }
  url="postgresql://etl@127.0.0.1:$port/postgres"
  echo "$url" >"$dir/url"
  echo "$url"
  ;;
restart)
  # pg_ctl restart keeps the options of the last start (postmaster.opts).
  as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m immediate -w -t 60 restart >/dev/null \
    || { cat "$dir/server.log" >&2; exit 2; }
  ;;
stop)
  if [ -d "$dir/data" ]; then
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  ;;
*)
  echo "usage: pg-tmp.sh start|restart|stop DIR" >&2
  exit 2
  ;;
esac
