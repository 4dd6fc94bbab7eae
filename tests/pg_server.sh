#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests: a fresh cluster in a temporary directory,
# listening on a free loopback port with trust authentication and fsync off. Nothing of it
# outlives `stop`.
#
#   eval "$(tests/pg_server.sh start)"   # exports GPUPOOL_TEST_DATABASE_URL and GPUPOOL_TEST_PG_DIR
#   .venv/bin/pytest tests/web
#   tests/pg_server.sh stop              # stops the server in $GPUPOOL_TEST_PG_DIR, removes it
#
# `start` prints only the two export lines on stdout (the URL looks like
# postgresql://postgres@127.0.0.1:PORT/postgres); progress and errors go to stderr.
# `stop DIR` stops the server in DIR instead. PG_BIN overrides where the binaries are
# (default /usr/lib/postgresql/15/bin). PostgreSQL refuses to run as root, so as root the
# server runs as the `postgres` user.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

die() {
    echo "pg_server: $*" >&2
    exit 1
}

# Runs a PostgreSQL binary as a user it accepts.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

start() {
    [ -x "$PG_BIN/postgres" ] || die "no PostgreSQL in $PG_BIN (apt-get install postgresql-15, or set PG_BIN)"
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user to run the server as"
    fi
    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/gpupool-pg.XXXXXX")
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    # Until the server is up, any failure removes what was made.
    trap 'rm -rf "$dir"' EXIT

    as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 \
        --locale=C --no-sync --no-instructions >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; die "initdb failed"; }

    # The port is free when chosen but may be taken before the server binds it: retry.
    local port attempt
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        if as_pg "$PG_BIN/pg_ctl" start -D "$dir/data" -l "$dir/server.log" -w -t 30 \
            -o "-h 127.0.0.1 -p $port -k $dir/data -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
            >/dev/null; then
            trap - EXIT
            echo "pg_server: PostgreSQL up on 127.0.0.1:$port ($dir)" >&2
            echo "export GPUPOOL_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:$port/postgres"
            echo "export GPUPOOL_TEST_PG_DIR=$dir"
            return 0
        fi
        echo "pg_server: start on port $port failed (attempt $attempt)" >&2
    done
    cat "$dir/server.log" >&2
    die "could not start PostgreSQL"
}

stop() {
    local dir=${1:-${GPUPOOL_TEST_PG_DIR:-}}
    [ -n "$dir" ] || die "stop: which server? (give its directory or set GPUPOOL_TEST_PG_DIR)"
    # Only ever remove a directory this script made.
    [ -f "$dir/data/PG_VERSION" ] || die "stop: $dir is not a server this script started"
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" stop -D "$dir/data" -m immediate -w >/dev/null 2>&1 ||
            echo "pg_server: pg_ctl stop failed; removing $dir anyway" >&2
    fi
    rm -rf "$dir"
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:-}" ;;
    *)
        echo "usage: $0 start | stop [DIR]" >&2
        exit 2
        ;;
esac
