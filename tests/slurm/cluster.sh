#!/usr/bin/env bash
# A real one-node SLURM cluster (with accounting) on localhost, for tests/test_slurm.py. Debian 12, root, no systemd.
#
#   tests/slurm/cluster.sh start DIR      install missing packages, write configs into DIR, start the daemons,
#                                         register account + user, wait until the node is idle; prints `export ...`
#                                         lines (also in DIR/env.sh): source them to use sbatch/squeue/sacct
#   tests/slurm/cluster.sh stop DIR [--purge]   scancel leftover jobs, stop every daemon it started (by PID), and
#                                         with --purge delete DIR
#   tests/slurm/cluster.sh status DIR     daemons, node and queue
#
# Everything lives in DIR: slurm.conf / slurmdbd.conf, a private MariaDB data dir, state, spool, logs, PID files and
# client wrappers (DIR/bin); the private munge key and socket live in /tmp/momentum-ntk-munge.* (linked as DIR/munge:
# user munge must be able to reach them). All ports are free ones picked at start. Nothing in /etc is touched, so the
# cluster can run beside another one. Daemons run in the foreground of their own session (setsid) and are stopped by
# the PIDs recorded in DIR/pids (checked against /proc/PID/comm first: never by name).
# Environment: SLURM_TEST_NO_INSTALL=1 fails instead of running apt-get; SLURM_TEST_ACCOUNT (default mntk),
# SLURM_TEST_PARTITION (default debug), SLURM_TEST_CPUS (default nproc).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CMD=${1:-}
DIR=${2:-}
if [[ -z $CMD || -z $DIR ]]; then
    sed -n '2,9p' "$0" >&2
    exit 2
fi
if [[ $CMD != start && ! -d $DIR ]]; then
    echo "no cluster folder $DIR" >&2
    exit 0
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
# Never find our own client wrappers (DIR/bin, see below) when looking for the real commands.
PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$DIR/bin" | paste -sd: -)

ACCOUNT=${SLURM_TEST_ACCOUNT:-mntk}
PARTITION=${SLURM_TEST_PARTITION:-debug}
CLUSTER=mntkci
HOST=$(hostname -s)
USER_NAME=$(id -un)
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
# name -> the /proc/PID/comm the process must have (teardown refuses to signal anything else)
DAEMONS_STOP_ORDER=(slurmd slurmctld slurmdbd mariadbd munged)

log() { printf '[cluster %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

export SLURM_CONF="$DIR/etc/slurm.conf"

# --- helpers ----------------------------------------------------------------------------------------------------

# State letter of a live process (R, S, D, ...), Z for a zombie, empty when gone. Zombies linger here for seconds.
proc_state() {
    local stat
    [[ $1 =~ ^[0-9]+$ ]] || return 0 # (an empty PID would read /proc//stat = /proc/stat)
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    echo "${stat%% *}"
}

alive() {
    local s
    s=$(proc_state "$1")
    [[ -n $s && $s != Z && $s != X ]]
}

pid_of() { cat "$DIR/pids/$1.pid" 2>/dev/null || true; }

# Start a daemon in the foreground of a new session; its PID goes to DIR/pids/NAME.pid.
start_daemon() {
    local name=$1
    shift
    setsid "$@" >>"$DIR/log/$name.out" 2>&1 </dev/null &
    echo $! >"$DIR/pids/$name.pid"
    log "started $name (pid $!)"
}

# wait_for SECONDS DESCRIPTION DAEMON COMMAND...: poll COMMAND until it succeeds; fail early if DAEMON died.
wait_for() {
    local secs=$1 what=$2 daemon=$3
    shift 3
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if [[ -n $daemon ]] && ! alive "$(pid_of "$daemon")"; then
            tail -n 30 "$DIR/log/$daemon".* >&2 || true
            die "$daemon exited while waiting for $what"
        fi
        if ((SECONDS >= deadline)); then
            [[ -n $daemon ]] && { tail -n 30 "$DIR/log/$daemon".* >&2 || true; }
            die "timed out after ${secs}s waiting for $what"
        fi
        sleep 0.2
    done
}

free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

render() { # render TEMPLATE OUT
    sed -e "s|@MUNGE_DIR@|$MUNGE_DIR|g" -e "s|@DIR@|$DIR|g" -e "s|@HOST@|$HOST|g" -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@PARTITION@|$PARTITION|g" \
        -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$MEM_MB|g" -e "s|@CTLD_PORT@|$CTLD_PORT|g" \
        -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" -e "s|@DBD_PORT@|$DBD_PORT|g" -e "s|@DB_PORT@|$DB_PORT|g" \
        -e "s|@DB_PASS@|$DB_PASS|g" "$1" >"$2"
}

install_packages() {
    local missing=()
    for bin in slurmctld slurmd slurmdbd sbatch srun sacct sacctmgr munged munge unmunge mariadbd mariadb-install-db mariadb mariadb-admin; do
        command -v "$bin" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
    done
    ((${#missing[@]} == 0)) && return 0
    [[ ${SLURM_TEST_NO_INSTALL:-0} == 1 ]] && die "missing ${missing[*]}; apt-get install ${PACKAGES[*]}"
    [[ $(id -u) == 0 ]] || die "missing ${missing[*]} and not root: apt-get install ${PACKAGES[*]}"
    log "installing ${PACKAGES[*]} (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    timeout -k 10 300 apt-get update -qq
    timeout -k 10 600 apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >"$DIR/log/apt.log" 2>&1 ||
        {
            tail -n 20 "$DIR/log/apt.log" >&2
            die "apt-get install failed"
        }
}

# --- start -------------------------------------------------------------------------------------------------------

cmd_start() {
    [[ $(id -u) == 0 ]] || die "the test cluster needs root (SlurmUser=root, munge as user munge)"
    local d
    for d in "${DAEMONS_STOP_ORDER[@]}"; do
        alive "$(pid_of "$d")" && die "$d of this cluster is already running (pid $(pid_of "$d")): stop it first"
    done
    export PATH=$PATH:/usr/sbin:/sbin
    chmod 755 "$DIR"
    mkdir -p "$DIR"/{etc,pids,run,log,state,spool,mysql}
    # munged runs as user munge, which may not be able to enter DIR (pytest's tmp folders are 0700): its key, socket
    # and logs live in a folder of their own under /tmp, linked as DIR/munge and removed by `stop --purge`.
    if [[ ! -L $DIR/munge ]]; then
        ln -s "$(mktemp -d /tmp/momentum-ntk-munge.XXXXXX)" "$DIR/munge"
    fi
    MUNGE_DIR=$(readlink "$DIR/munge")
    install_packages
    id munge >/dev/null 2>&1 || die "no user munge: is the munge package installed?"
    trap 'rc=$?; if ((rc != 0)); then log "start failed; stopping what was started"; cmd_stop || true; fi' EXIT

    CPUS=${SLURM_TEST_CPUS:-$(nproc)}
    # More memory than slurmd measures drains the node: offer 90 % of MemTotal.
    MEM_MB=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    read -r CTLD_PORT SLURMD_PORT DBD_PORT DB_PORT <<<"$(free_ports 4)"
    DB_PASS=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')

    # munge: private key and socket
    dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
    chown -R munge:munge "$MUNGE_DIR"
    chmod 700 "$MUNGE_DIR"
    chmod 400 "$MUNGE_DIR/munge.key"
    start_daemon munged setpriv --reuid=munge --regid=munge --init-groups \
        munged --foreground --force --socket="$MUNGE_DIR/munge.socket" --key-file="$MUNGE_DIR/munge.key" \
        --log-file="$MUNGE_DIR/munged.log" --pid-file="$MUNGE_DIR/munged.pid" --seed-file="$MUNGE_DIR/munged.seed"
    wait_for 20 "munge" munged bash -c "munge -n -S '$MUNGE_DIR/munge.socket' | unmunge -S '$MUNGE_DIR/munge.socket'"

    # MariaDB: private data dir, TCP on a free port bound to 127.0.0.1
    log "initialising MariaDB in $DIR/mysql"
    mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql" --skip-test-db \
        --auth-root-authentication-method=socket >"$DIR/log/mariadb-install.log" 2>&1 ||
        {
            tail -n 20 "$DIR/log/mariadb-install.log" >&2
            die "mariadb-install-db failed"
        }
    start_daemon mariadbd mariadbd --no-defaults --user=root --datadir="$DIR/mysql" \
        --socket="$DIR/run/mysqld.sock" --port="$DB_PORT" --bind-address=127.0.0.1 \
        --pid-file="$DIR/run/mariadbd.pid" --log-error="$DIR/log/mariadbd.log" --skip-log-bin \
        --skip-performance-schema --innodb-buffer-pool-size=128M --innodb-log-file-size=16M \
        --innodb-lock-wait-timeout=900 --innodb-flush-log-at-trx-commit=0 --max-connections=50
    wait_for 60 "MariaDB" mariadbd mariadb-admin --no-defaults --socket="$DIR/run/mysqld.sock" -u root ping
    mariadb --no-defaults --socket="$DIR/run/mysqld.sock" -u root -e "
        CREATE USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
        CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
        FLUSH PRIVILEGES;"

    # Client wrappers that pin SLURM_CONF: the plugin's job step strips SLURM_* variables (SLURM_CONF included)
    # before its nested `srun`, which then looks for /etc/slurm/slurm.conf. PATH survives, so env.sh puts these first.
    mkdir -p "$DIR/bin"
    local c
    for c in srun sbatch squeue sacct scancel scontrol sinfo sacctmgr; do
        printf '#!/bin/sh\nexport SLURM_CONF=%s\nexec %s "$@"\n' "$SLURM_CONF" "$(command -v "$c")" >"$DIR/bin/$c"
        chmod 755 "$DIR/bin/$c"
    done

    # configs
    render "$HERE/slurm.conf.in" "$DIR/etc/slurm.conf"
    render "$HERE/slurmdbd.conf.in" "$DIR/etc/slurmdbd.conf"
    chmod 600 "$DIR/etc/slurmdbd.conf"
    chmod 644 "$DIR/etc/slurm.conf"

    # slurmdbd finds slurmdbd.conf next to $SLURM_CONF
    start_daemon slurmdbd slurmdbd -D
    wait_for 60 "slurmdbd on port $DBD_PORT" slurmdbd port_open "$DBD_PORT"

    start_daemon slurmctld slurmctld -D -i -f "$SLURM_CONF"
    wait_for 60 "slurmctld" slurmctld scontrol ping
    # slurmctld registers the cluster with slurmdbd by itself; then the account and the user (re-adding exits 1).
    wait_for 30 "cluster registration" slurmctld bash -c "sacctmgr -nP show cluster format=cluster | grep -qx '$CLUSTER'"
    if ! sacctmgr -nP show account "$ACCOUNT" format=account | grep -qx "$ACCOUNT"; then
        sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=ci Organization=ci >/dev/null
    fi
    # (root already has an association with account root: add one with ours and make it the default)
    if ! sacctmgr -nP show assoc where user="$USER_NAME" account="$ACCOUNT" format=user | grep -qx "$USER_NAME"; then
        sacctmgr -i add user "$USER_NAME" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" Cluster="$CLUSTER" >/dev/null
    fi
    sacctmgr -i modify user where name="$USER_NAME" set DefaultAccount="$ACCOUNT" >/dev/null || true

    start_daemon slurmd slurmd -D -f "$SLURM_CONF" -N "$HOST"
    local deadline=$((SECONDS + 60)) state=""
    while :; do
        state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n1 || true)
        [[ $state == idle ]] && break
        if [[ $state == down* || $state == drain* ]]; then
            scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
        fi
        alive "$(pid_of slurmd)" || {
            tail -n 30 "$DIR/log/slurmd".* >&2 || true
            die "slurmd exited"
        }
        ((SECONDS < deadline)) || die "node $HOST is '$state', not idle, after 60 s (see $DIR/log/slurmd.log)"
        sleep 0.3
    done
    # The association must have reached slurmctld before a job can use it.
    wait_for 30 "association of $USER_NAME" slurmctld bash -c \
        "scontrol show assoc_mgr users=$USER_NAME flags=assoc | grep -q 'Account=$ACCOUNT'"
    trap - EXIT

    cat >"$DIR/env.sh" <<EOF
export SLURM_CONF='$SLURM_CONF'
export PATH='$DIR/bin':"\$PATH"
export SLURM_TEST_DIR='$DIR'
export SLURM_TEST_ACCOUNT='$ACCOUNT'
export SLURM_TEST_PARTITION='$PARTITION'
export SLURM_TEST_CLUSTER='$CLUSTER'
export SLURM_TEST_CPUS='$CPUS'
export SLURM_TEST_MEM_MB='$MEM_MB'
EOF
    log "cluster $CLUSTER up: node $HOST idle, $CPUS CPUs, $MEM_MB MiB, partition $PARTITION, account $ACCOUNT"
    cat "$DIR/env.sh"
}

# --- stop --------------------------------------------------------------------------------------------------------

stop_pid() { # stop_pid NAME: TERM, wait up to 15 s, then KILL; only if /proc/PID/comm is NAME
    local name=$1 pid comm
    pid=$(pid_of "$name")
    [[ -n $pid ]] || return 0
    if alive "$pid"; then
        comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
        if [[ $comm != "$name" ]]; then
            log "pid $pid of $name is now '$comm': not touching it"
        else
            kill -TERM "$pid" 2>/dev/null || true
            local i
            for ((i = 0; i < 75; i++)); do
                alive "$pid" || break
                sleep 0.2
            done
            if alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
                log "$name (pid $pid) ignored SIGTERM; SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
            log "stopped $name (pid $pid)"
        fi
    fi
    rm -f "$DIR/pids/$name.pid"
}

cmd_stop() {
    export PATH=$PATH:/usr/sbin:/sbin
    if alive "$(pid_of slurmctld)"; then
        local jobs
        jobs=$(timeout -k 5 20 squeue -h -o %i 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            log "cancelling leftover jobs: $(echo $jobs)"
            timeout -k 5 20 scancel $jobs 2>/dev/null || true
            local i
            for ((i = 0; i < 50; i++)); do
                [[ -z $(timeout -k 5 10 squeue -h -t running,completing -o %i 2>/dev/null || true) ]] && break
                sleep 0.3
            done
        fi
    fi
    local d
    for d in "${DAEMONS_STOP_ORDER[@]}"; do
        stop_pid "$d"
    done
    if [[ ${1:-} == --purge ]]; then
        local munge_dir
        munge_dir=$(readlink "$DIR/munge" 2>/dev/null || true)
        [[ $munge_dir == /tmp/momentum-ntk-munge.* ]] && rm -rf "$munge_dir"
        rm -rf "$DIR"
        log "removed $DIR"
    fi
}

cmd_status() {
    local d pid
    for d in munged mariadbd slurmdbd slurmctld slurmd; do
        pid=$(pid_of "$d")
        if [[ -n $pid ]] && alive "$pid"; then echo "$d: running (pid $pid)"; else echo "$d: not running"; fi
    done
    if alive "$(pid_of slurmctld)"; then
        sinfo -N -o '%N %T %c %m' || true
        squeue || true
    fi
}

case $CMD in
start) cmd_start ;;
stop) cmd_stop "${3:-}" ;;
status) cmd_status ;;
*) die "unknown command '$CMD' (start | stop | status)" ;;
esac
