#!/usr/bin/env bash
# A chaos soak anyone can run: WORKERS workers (each its own Unix user) on
# one rollout of TENANTS PostgreSQL schema tenants, two waves with a gate, a
# set with a transactional migration, a no-transaction concurrent index and a
# batched backfill. Every EVERY seconds for DURATION seconds (or until the
# rollout ends) a random worker is SIGKILLed (and a new one started in its
# place), SIGSTOPped past its lease and continued, or cut from the servers
# for a few seconds (an iptables owner-match rule dropping that user's
# packets to PostgreSQL on the loopback, removed after: every worker's URLs
# stay the same); halfway through, the PostgreSQL server itself is
# restarted. At the end it checks, and exits 1 when one fails:
#   every tenant at head, each version exactly once and successful; the
#   transactional migration ran once per tenant; every index VALID; each
#   gate evaluated once; the report counts every tenant once, all
#   succeeded; no worker left running.
#
#   scripts/chaos.sh                      # 1,000 tenants, 4 workers, 3 min
#   TENANTS=150 DURATION=30 scripts/chaos.sh   # the short form CI runs
#
# Needs root (users, iptables, pg_ctlcluster), PostgreSQL running
# (scripts/test-services.sh) and a built fleetmig (FLEETMIG_BIN, default
# the newer of target/release/fleetmig and target/debug/fleetmig).
set -euo pipefail
cd "$(dirname "$0")/.."

TENANTS=${TENANTS:-1000}
WORKERS=${WORKERS:-4}
DURATION=${DURATION:-180}
EVERY=${EVERY:-2}
CONCURRENCY=${CONCURRENCY:-4}
LEASE_S=${LEASE_S:-3}
# how long the rollout may take to end once the faults stop
END_WAIT=${END_WAIT:-600}
# each tenant's first migration sleeps so that the rollout lasts about
# DURATION without faults
SLEEP=${SLEEP:-$(awk -v d="$DURATION" -v w="$WORKERS" -v c="$CONCURRENCY" -v n="$TENANTS" \
    'BEGIN { s = d * w * c / n * 0.8; if (s > 5) s = 5; printf "%.2f", s }')}
BASE=${FLEETMIG_TEST_PG_URL:-postgres://fleetmig:fleetmig-test-secret@127.0.0.1:5432/fleetmig_test?sslmode=disable}
BIN=${FLEETMIG_BIN:-}
if [ -z "$BIN" ]; then
    # the newer of the release and debug builds (a stale one tests old code)
    BIN=$(ls -t target/release/fleetmig target/debug/fleetmig 2>/dev/null | head -1)
    BIN=${BIN:+$PWD/$BIN}
fi
[ -x "$BIN" ] || { echo "chaos: no fleetmig binary at $BIN (cargo build --release)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "chaos: needs root (users, iptables, pg_ctlcluster)" >&2; exit 2; }
if ! command -v iptables >/dev/null; then
    echo "chaos: installing iptables" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null
fi

log() { echo "chaos $(date +%T) $*" >&2; }

DB="fmchaos_$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
URL=$(echo "$BASE" | sed -E "s#/[^/?]+(\?|$)#/$DB\1#")
ADMIN=$(echo "$BASE" | sed -E "s#/[^/?]+(\?|$)#/postgres\1#")
WORK=$(mktemp -d /tmp/fleetmig-chaos.XXXXXX)
chmod 777 "$WORK"
declare -a PIDS USERS
KILLS=0; STALLS=0; CUTS=0; RESTARTS=0

users() {
    for i in $(seq 1 "$WORKERS"); do
        local u="fmchaos$i"
        id "$u" >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin "$u"
        # a worker an earlier soak left behind (its script killed) would
        # be counted as this one's
        pkill -KILL -u "$u" 2>/dev/null || true
        USERS[$i]=$u
    done
}

cut_rule() { # add|delete user
    iptables "-$1" OUTPUT -o lo -p tcp --dport 5432 -m owner --uid-owner "$2" -j DROP 2>/dev/null || true
}

cleanup() {
    for i in $(seq 1 "$WORKERS"); do
        cut_rule D "fmchaos$i"; cut_rule D "fmchaos$i"
        pkill -KILL -u "fmchaos$i" 2>/dev/null || true
    done
    if [ "${KEEP:-}" != 1 ]; then
        psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
# killed (a test harness's timeout): the workers go with the script
trap 'exit 143' TERM INT

setup() {
    psql -q "$ADMIN" -c "CREATE DATABASE $DB" >/dev/null
    {
        echo "CREATE TABLE public.ran (tenant text NOT NULL, version int NOT NULL);"
        for i in $(seq 1 "$TENANTS"); do printf 'CREATE SCHEMA tenant_%04d;\n' "$i"; done
    } | psql -q "$URL" >/dev/null
    mkdir -p "$WORK/set"
    cat > "$WORK/set/0001_items.sql" <<SQL
CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text);
INSERT INTO items SELECT g, g % 97, NULL FROM generate_series(1, 2000) g;
INSERT INTO public.ran SELECT current_schema(), 1;
SELECT pg_sleep($SLEEP);
SQL
    cat > "$WORK/set/0002_items_v.sql" <<'SQL'
-- no-transaction
CREATE INDEX CONCURRENTLY items_v ON items (v);
CREATE INDEX CONCURRENTLY items_note ON items (note, v);
SQL
    cat > "$WORK/set/0003_backfill_note.sql" <<'SQL'
-- fleetmig: batch size=300 pause=5ms
UPDATE items SET note = 'n' || id
WHERE id IN (SELECT id FROM items WHERE note IS NULL ORDER BY id LIMIT :batch_size);
SQL
    echo "SELECT 1 FROM items WHERE note IS NULL HAVING count(*) > 0" > "$WORK/gate.sql"
    chmod -R a+rX "$WORK"
}

common() {
    # every tenant is on the one server: --per-server (a limit for the
    # whole rollout) lets every worker's slots run
    echo --state "$URL" --lease "${LEASE_S}s" --concurrency "$CONCURRENCY" \
        --per-server "$((WORKERS * CONCURRENCY))" \
        --progress-every 0 --log-level info
}

# start_worker SLOT [rollout]: a process as that slot's user, its pid in PIDS
start_worker() {
    local i=$1 kind=${2:-worker}
    local args
    if [ "$kind" = rollout ]; then
        args="rollout --fleet postgres-schemas:$URL --migrations $WORK/set --waves first=10%,rest \
            --gate-max-failures 0 --gate-sql $WORK/gate.sql --max-attempts 1000 $(common)"
    else
        args="worker --rollout $ROLLOUT --fleet postgres-schemas:$URL $(common)"
    fi
    # setpriv execs: the pid is fleetmig's own. Each worker runs as its own
    # user and writes the rollout's report: what one creates, all may write
    # (a worker refuses to start on a reports folder it cannot write)
    (umask 000 && cd "$WORK" && exec setpriv --reuid="${USERS[$i]}" --regid="${USERS[$i]}" --clear-groups \
        "$BIN" $args >>"$WORK/worker$i.log" 2>&1) &
    PIDS[$i]=$!
}

alive() { kill -0 "$1" 2>/dev/null; }

status() {
    psql -qAt "$URL" -c "SELECT status FROM fleetmig_rollouts WHERE id = '$ROLLOUT'" 2>/dev/null || echo unknown
}

main() {
    users
    setup
    log "db $DB: $TENANTS tenants, $WORKERS workers x $CONCURRENCY, lease ${LEASE_S}s, sleep ${SLEEP}s, chaos every ${EVERY}s for ${DURATION}s"
    start_worker 1 rollout
    for _ in $(seq 1 200); do
        ROLLOUT=$(psql -qAt "$URL" -c "SELECT id FROM fleetmig_rollouts LIMIT 1" 2>/dev/null || true)
        [ -n "$ROLLOUT" ] && break
        sleep 0.1
    done
    [ -n "$ROLLOUT" ] || { log "the rollout never started"; cat "$WORK/worker1.log" >&2; exit 1; }
    for i in $(seq 2 "$WORKERS"); do start_worker "$i"; done
    local t0=$SECONDS restarted=0
    while [ $((SECONDS - t0)) -lt "$DURATION" ]; do
        sleep "$EVERY"
        case "$(status)" in completed|halted|aborted|failed) break ;; esac
        if [ $restarted = 0 ] && [ $((SECONDS - t0)) -ge $((DURATION / 2)) ]; then
            log "restarting PostgreSQL"
            pg_ctlcluster 15 main restart
            restarted=1; RESTARTS=$((RESTARTS + 1))
            continue
        fi
        local i=$((RANDOM % WORKERS + 1)) pid=${PIDS[$i]}
        alive "$pid" || { start_worker "$i"; continue; }
        case $((RANDOM % 3)) in
            0)  log "SIGKILL worker $i"
                kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
                KILLS=$((KILLS + 1)); start_worker "$i" ;;
            1)  log "SIGSTOP worker $i past its lease"
                kill -STOP "$pid"; STALLS=$((STALLS + 1))
                ( sleep $((LEASE_S + 2)); kill -CONT "$pid" 2>/dev/null || true ) & ;;
            2)  log "cutting worker $i from PostgreSQL"
                cut_rule A "${USERS[$i]}"; CUTS=$((CUTS + 1))
                ( sleep 4; cut_rule D "${USERS[$i]}" ) & ;;
        esac
    done
    log "chaos over; waiting for the rollout to end"
    wait_background
    local deadline=$((SECONDS + END_WAIT))
    while [ $SECONDS -lt $deadline ]; do
        case "$(status)" in completed|halted|aborted|failed) break ;; esac
        # a slot whose process ended before the rollout did gets a new one
        for i in $(seq 1 "$WORKERS"); do alive "${PIDS[$i]}" || start_worker "$i"; done
        sleep 1
    done
    for i in $(seq 1 "$WORKERS"); do
        for _ in $(seq 1 300); do alive "${PIDS[$i]}" || break; sleep 0.1; done
    done
    check
}

wait_background() {
    # the pending SIGCONTs and rule removals
    sleep $((LEASE_S + 3))
    for i in $(seq 1 "$WORKERS"); do cut_rule D "${USERS[$i]}"; kill -CONT "${PIDS[$i]}" 2>/dev/null || true; done
}

FAILED=0
expect() { # name got want
    if [ "$2" = "$3" ]; then log "ok   $1: $2"; else log "FAIL $1: $2 (want $3)"; FAILED=1; fi
}

check() {
    local st; st=$(status)
    expect "rollout status" "$st" completed
    local union
    union=$(for i in $(seq 1 "$TENANTS"); do
        printf "SELECT 'tenant_%04d' AS t, version, success FROM tenant_%04d._sqlx_migrations UNION ALL\n" "$i" "$i"
    done)
    union="${union% UNION ALL}"
    local h
    h=$(psql -qAt "$URL" -c "SELECT count(*) || ' ' || count(DISTINCT (t, version)) || ' ' || bool_and(success) FROM ($union) h" 2>&1 || echo "unreadable")
    expect "history rows, distinct, all successful" "$h" "$((TENANTS * 3)) $((TENANTS * 3)) true"
    expect "the transactional migration ran once per tenant" \
        "$(psql -qAt "$URL" -c "SELECT count(*) || ' ' || count(DISTINCT tenant) FROM public.ran")" "$TENANTS $TENANTS"
    expect "indexes, all VALID" "$(psql -qAt "$URL" -c "SELECT count(*) || ' ' || bool_and(i.indisvalid) FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname LIKE 'tenant\_%' AND c.relname IN ('items_v', 'items_note')")" "$((TENANTS * 2)) true"
    expect "rows the backfill left NULL" "$(psql -qAt "$URL" -c "SELECT count(*) FROM ($(for i in $(seq 1 "$TENANTS"); do
        printf "SELECT 1 FROM tenant_%04d.items WHERE note IS NULL UNION ALL\n" "$i"; done | sed '$ s/ UNION ALL$//')) x")" 0
    expect "gate evaluations (two waves)" \
        "$(psql -qAt "$URL" -c "SELECT count(*) FROM fleetmig_gates WHERE rollout_id = '$ROLLOUT'")" 2
    (cd "$WORK" && "$BIN" report --rollout "$ROLLOUT" --state "$URL" >"$WORK/report.out" 2>&1) || true
    local csv; csv=$(find "$WORK/reports" -name tenants.csv 2>/dev/null | head -1)
    if [ -n "$csv" ]; then
        expect "report rows" "$(($(wc -l <"$csv") - 1))" "$TENANTS"
        expect "report rows succeeded" "$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "status") c = i; next }
            $c == "succeeded" { n++ } END { print n + 0 }' "$csv")" "$TENANTS"
    else
        expect "report written" no yes
    fi
    local left=0
    for i in $(seq 1 "$WORKERS"); do
        if pgrep -u "${USERS[$i]}" >/dev/null; then left=$((left + 1)); fi
    done
    expect "workers left running" "$left" 0
    local attempts
    attempts=$(psql -qAt "$URL" -c "SELECT COALESCE(sum(attempts), 0) FROM fleetmig_tenant_runs WHERE rollout_id = '$ROLLOUT'" 2>/dev/null || echo '?')
    log "faults: $KILLS SIGKILLs, $STALLS stalls past the lease, $CUTS network cuts, $RESTARTS PostgreSQL restart(s); $attempts attempts for $TENANTS tenants"
    echo "chaos: tenants=$TENANTS workers=$WORKERS kills=$KILLS stalls=$STALLS cuts=$CUTS restarts=$RESTARTS attempts=$attempts failed=$FAILED"
    if [ $FAILED = 1 ]; then
        log "worker logs kept in $WORK"; KEEP=1
        psql -q "$URL" -c "SELECT id, status, current_wave, requested FROM fleetmig_rollouts" \
            -c "SELECT wave, status, gated_by FROM fleetmig_waves WHERE rollout_id = '$ROLLOUT' ORDER BY wave" \
            -c "SELECT tenant, wave, status, claimed_by, attempts FROM fleetmig_tenant_runs
                WHERE rollout_id = '$ROLLOUT' AND status <> 'succeeded' ORDER BY tenant LIMIT 20" \
            -c "SELECT worker, (extract(epoch FROM now()) * 1000)::bigint - heartbeat_at AS silent_ms, stopped_at FROM fleetmig_workers
                WHERE rollout_id = '$ROLLOUT'" >&2 2>&1 || true
        ps -o user,pid,stat,etime,args -u "${USERS[*]// /,}" >&2 || true
        tail -n 20 "$WORK"/worker*.log >&2 || true
        exit 1
    fi
}

main
