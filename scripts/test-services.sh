#!/usr/bin/env bash
# Starts the database servers the test suite needs, on this machine, and
# creates the test role on each. Idempotent: safe to run again.
#   PostgreSQL 15: installed on the machine image, started with pg_ctlcluster.
#   MariaDB: installed with apt-get where missing, then started.
# Prints the URLs the tests use (the same defaults are built into the tests).
set -euo pipefail

PG_PASSWORD="${FLEETMIG_TEST_PG_PASSWORD:-fleetmig-test-secret}"
MY_PASSWORD="${FLEETMIG_TEST_MYSQL_PASSWORD:-fleetmig-test-secret}"

log() { echo "test-services: $*" >&2; }

start_postgres() {
    if ! command -v pg_ctlcluster >/dev/null; then
        log "installing PostgreSQL"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    local version
    version="$(pg_lsclusters -h | awk 'NR==1 {print $1}')"
    if [ -z "$version" ]; then
        log "no PostgreSQL cluster found"; exit 1
    fi
    if ! pg_lsclusters -h | awk '{print $4}' | grep -q online; then
        log "starting PostgreSQL $version"
        pg_ctlcluster "$version" main start
    fi
    for _ in $(seq 1 60); do
        if su postgres -c "psql -qAtc 'SELECT 1'" >/dev/null 2>&1; then break; fi
        sleep 0.5
    done
    su postgres -c "psql -v ON_ERROR_STOP=1 -q" <<SQL
DO \$\$BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'fleetmig') THEN
    CREATE ROLE fleetmig LOGIN SUPERUSER PASSWORD '$PG_PASSWORD';
  ELSE
    ALTER ROLE fleetmig LOGIN SUPERUSER PASSWORD '$PG_PASSWORD';
  END IF;
END\$\$;
SQL
    if ! su postgres -c "psql -qAtc \"SELECT 1 FROM pg_database WHERE datname = 'fleetmig_test'\"" | grep -q 1; then
        su postgres -c "createdb -O fleetmig fleetmig_test"
    fi
    log "PostgreSQL $version ready"
}

start_mariadb() {
    if ! command -v mariadbd >/dev/null && ! command -v mysqld >/dev/null; then
        log "installing MariaDB with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null
    fi
    if ! mariadb-admin ping --silent >/dev/null 2>&1; then
        log "starting MariaDB"
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        if ! service mariadb start >/dev/null 2>&1; then
            (mariadbd-safe --user=mysql >/dev/null 2>&1 &)
        fi
        for _ in $(seq 1 120); do
            if mariadb-admin ping --silent >/dev/null 2>&1; then break; fi
            sleep 0.5
        done
    fi
    mariadb-admin ping --silent >/dev/null 2>&1 || { log "MariaDB did not start"; exit 1; }
    mariadb <<SQL
CREATE USER IF NOT EXISTS 'fleetmig'@'localhost' IDENTIFIED BY '$MY_PASSWORD';
CREATE USER IF NOT EXISTS 'fleetmig'@'127.0.0.1' IDENTIFIED BY '$MY_PASSWORD';
ALTER USER 'fleetmig'@'localhost' IDENTIFIED BY '$MY_PASSWORD';
ALTER USER 'fleetmig'@'127.0.0.1' IDENTIFIED BY '$MY_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO 'fleetmig'@'localhost' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'fleetmig'@'127.0.0.1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
    log "MariaDB $(mariadb -N -e 'SELECT VERSION()') ready"
}

start_postgres
start_mariadb
