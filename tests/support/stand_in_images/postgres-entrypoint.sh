#!/bin/sh
# The stand-in postgres image's entrypoint: what the official image's does for compose.yaml.
# As root: own PGDATA (a fresh named volume is root's), then run again as user postgres. On an
# empty PGDATA: initdb with POSTGRES_USER and POSTGRES_PASSWORD (password logins from other
# hosts), then POSTGRES_DB. Then the server, in the foreground.
set -eu
if [ "${1:-}" = postgres ] && [ "$(id -u)" = 0 ]; then
    install -d -o postgres -g postgres -m 700 "$PGDATA"
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?is not set: the postgres image needs a password for its user}"
    user="${POSTGRES_USER:-postgres}"
    database="${POSTGRES_DB:-$user}"
    password_file="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
    initdb --pgdata="$PGDATA" --username="$user" --pwfile="$password_file" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8
    rm -f "$password_file"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    if [ "$database" != postgres ]; then
        echo "CREATE DATABASE \"$database\" OWNER \"$user\"" \
            | postgres --single -D "$PGDATA" postgres > /dev/null
    fi
fi
exec "$@"
