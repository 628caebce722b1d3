# Start a throwaway PostgreSQL server for the tests; source this file, then `start_postgres`.
#
# The cluster lives in a temporary folder, listens on 127.0.0.1 only, on a free port, and
# runs as an unprivileged user (PostgreSQL refuses to run as root, and CI runs as root).
# `start_postgres` exports TEST_POSTGRES_URL (not TWEETLIKE_-prefixed: that prefix sets config
# keys); `stop_postgres` removes everything.
# The server comes from the system's packages (installed with apt-get when missing).

_pg_bindir() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
        fi
    done | sort -V | tail -n 1
}

_pg_as() {
    if [ "$PG_USER" = "$(id -un)" ]; then "$@"; else runuser -u "$PG_USER" -- "$@"; fi
}

start_postgres() {
    local bindir user port
    bindir="$(_pg_bindir)"
    if [ -z "$bindir" ]; then
        echo "installing PostgreSQL from the system packages" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        bindir="$(_pg_bindir)"
    fi
    if [ -z "$bindir" ]; then
        echo "no PostgreSQL server binaries found after installing" >&2
        return 1
    fi
    user="$(id -un)"
    if [ "$(id -u)" = 0 ]; then
        user=postgres
        id -u "$user" >/dev/null 2>&1 || useradd --system --no-create-home "$user"
    fi
    PG_TMP="$(mktemp -d)"
    chown "$user" "$PG_TMP"
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    PG_USER="$user"
    PG_CTL=("$bindir/pg_ctl" -D "$PG_TMP/data" -w -s)
    _pg_as "$bindir/initdb" -D "$PG_TMP/data" -U tweetlike --auth=trust -E UTF8 --no-sync -N >/dev/null
    _pg_as "${PG_CTL[@]}" -l "$PG_TMP/server.log" -o "-h 127.0.0.1 -p $port -k $PG_TMP -F" start
    local tries=0
    until "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port"; do
        tries=$((tries + 1))
        if [ "$tries" -gt 60 ]; then
            echo "PostgreSQL did not become ready; its log:" >&2
            cat "$PG_TMP/server.log" >&2
            return 1
        fi
        sleep 0.5
    done
    _pg_as "$bindir/createdb" -h 127.0.0.1 -p "$port" -U tweetlike tweetlike
    export TEST_POSTGRES_URL="postgresql+psycopg://tweetlike@127.0.0.1:$port/tweetlike"
    echo "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') at 127.0.0.1:$port" >&2
}

stop_postgres() {
    if [ -n "${PG_TMP:-}" ] && [ -d "$PG_TMP" ]; then
        _pg_as "${PG_CTL[@]}" -m fast stop || true
        rm -rf "$PG_TMP"
    fi
}
