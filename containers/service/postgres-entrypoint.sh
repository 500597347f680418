#!/bin/sh
# PostgreSQL 15 in its own container: the cluster in $PGDATA (a volume), created on the
# first start with the controller's role and database, then served.
# Env: PGDATA (/var/lib/postgresql/data), PGPORT (5432), PGLISTEN (listen_addresses,
#      default *: the container's own network; the demo on one host sets 127.0.0.1),
#      POSTGRES_PASSWORD_FILE  the superuser's password (first start only),
#      SANDBOX_DB_PASSWORD_FILE  the password of role `sandbox`, owner of database `sandbox`
#                              (first start only; hex or base64 text, no quotes).
set -eu
PGDATA=${PGDATA:-/var/lib/postgresql/data}
PGPORT=${PGPORT:-5432}
PGLISTEN=${PGLISTEN:-*}
BIN=/usr/lib/postgresql/15/bin
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    for f in "${POSTGRES_PASSWORD_FILE:-}" "${SANDBOX_DB_PASSWORD_FILE:-}"; do
        [ -n "$f" ] && [ -r "$f" ] || {
            echo "postgres-entrypoint: POSTGRES_PASSWORD_FILE and SANDBOX_DB_PASSWORD_FILE" \
                 "must name readable files on the first start" >&2; exit 2; }
    done
    "$BIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=peer --auth-host=scram-sha-256 --pwfile="$POSTGRES_PASSWORD_FILE" >/dev/null
    # Password logins from any address (the controller's own network or host); local
    # socket logins only as the matching system user.
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pw=$(tr -d '\n' < "$SANDBOX_DB_PASSWORD_FILE")
    case "$pw" in *"'"*|*"\\"*) echo "postgres-entrypoint: quote in the password" >&2; exit 2;; esac
    printf "CREATE ROLE sandbox LOGIN PASSWORD '%s';\nCREATE DATABASE sandbox OWNER sandbox;\n" \
        "$pw" | "$BIN/postgres" --single -D "$PGDATA" postgres >/dev/null
    echo "postgres-entrypoint: cluster created in $PGDATA"
fi
exec "$BIN/postgres" -D "$PGDATA" -p "$PGPORT" -c listen_addresses="$PGLISTEN" \
    -c unix_socket_directories=/run/postgresql -c password_encryption=scram-sha-256
