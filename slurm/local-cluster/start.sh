#!/usr/bin/env bash
# Start a real single-node Slurm on this machine: for the tests (tests/slurm) and for
# trying the Slurm launcher and slurm/array.sbatch without a cluster.
#
#   slurm/local-cluster/start.sh          # installs slurm-wlm + munge (apt) when missing
#   export SLURM_CONF=$PWD/slurm/local-cluster/.state/slurm.conf   # printed at the end
#   sinfo; sbatch ...; python -m aggc.train -m ... hydra/launcher=slurm hydra.launcher.partition=local
#   slurm/local-cluster/stop.sh
#
# Needs root (it runs the daemons as root) on Debian/Ubuntu without systemd: the daemons
# run as plain background processes. This host (`hostname -s`) is the controller and the
# only node, partition `local`, CPUs only, no cgroup, no accounting (no slurmdbd: `sacct`
# fails). Everything the daemons write (config, state, spool, logs, pid files, munge key
# and socket) lies under one folder: $AGGC_SLURM_STATE, default slurm/local-cluster/.state.
#
# Idempotent: when the cluster is already up it says so and exits 0; daemons that died
# are started again. Exit status: 0 up, 1 bring-up failed (daemons' logs printed),
# 2 cannot run here (not root, no apt-get, packages could not be installed).
#
# Environment: AGGC_SLURM_STATE (state folder), AGGC_SLURM_PARTITION (local),
# AGGC_SLURM_CTLD_PORT / AGGC_SLURM_SLURMD_PORT (6817 / 6818), AGGC_SLURM_TIMEOUT (60 s).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${AGGC_SLURM_STATE:-$HERE/.state}
# shellcheck source=pids.sh
. "$HERE/pids.sh"
PARTITION=${AGGC_SLURM_PARTITION:-local}
CTLD_PORT=${AGGC_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${AGGC_SLURM_SLURMD_PORT:-6818}
TIMEOUT=${AGGC_SLURM_TIMEOUT:-60}
CONF=$STATE/slurm.conf
MUNGE_SOCKET=$STATE/munge/munge.socket
export SLURM_CONF=$CONF

say() { echo "start.sh: $*"; }
cannot() { echo "start.sh: cannot start a local Slurm here: $*" >&2; exit 2; }

# --- the daemons of this cluster, by pid file -----------------------------------------
# alive NAME PIDFILE: the pid file names a live process of that program (not a reused pid)
alive() { live_pid "$1" "$2" >/dev/null; }

show_logs() {
    local f
    for f in "$STATE"/log/*; do
        [[ -f $f ]] || continue
        echo "----- $f (last 40 lines) -----" >&2
        tail -n 40 "$f" >&2
    done
    if [[ -f $CONF ]]; then
        echo "----- sinfo -----" >&2
        timeout 10 sinfo -N -l >&2 2>&1 || true
        timeout 10 sinfo -R >&2 2>&1 || true
    fi
}
fail() { echo "start.sh: $*" >&2; show_logs; exit 1; }

# wait_for WHAT CMD...: run CMD until it succeeds; fail (logs shown) after $TIMEOUT s
wait_for() {
    local what=$1; shift
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "timed out after ${TIMEOUT}s waiting for $what"
        sleep 0.5
    done
}

node_state() { sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n1; }

# --- already up? ---------------------------------------------------------------------
HOST=$(hostname -s)
if [[ -f $CONF ]] && alive munged "$STATE/run/munged.pid" && alive slurmctld "$STATE/run/slurmctld.pid" \
    && alive slurmd "$STATE/run/slurmd.pid" && [[ $(node_state) =~ ^(idle|mixed|allocated|completing) ]]; then
    say "local Slurm already running (node $HOST: $(node_state), partition $PARTITION)"
    echo "export SLURM_CONF=$CONF"
    exit 0
fi

# --- prerequisites -------------------------------------------------------------------
[[ $(id -u) == 0 ]] || cannot "needs root (it runs munged, slurmctld and slurmd as root)"

missing=()
for cmd in munged munge unmunge slurmctld slurmd sinfo sbatch squeue scancel scontrol; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 || cannot "missing ${missing[*]} and no apt-get to install slurm-wlm, munge"
    say "installing slurm-wlm and munge with apt-get (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || cannot "apt-get update failed"
    apt-get install -y -q --no-install-recommends slurm-wlm munge >"${TMPDIR:-/tmp}/aggc-slurm-apt.log" 2>&1 \
        || { tail -n 30 "${TMPDIR:-/tmp}/aggc-slurm-apt.log" >&2; cannot "apt-get install slurm-wlm munge failed"; }
    for cmd in "${missing[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || cannot "$cmd still missing after installing slurm-wlm and munge"
    done
fi

# --- the state folder and the config -------------------------------------------------
((${#MUNGE_SOCKET} < 100)) || cannot "munge socket path too long (${#MUNGE_SOCKET} > 100 chars): set AGGC_SLURM_STATE to a shorter folder"
mkdir -p "$STATE"/{munge,slurmctld,slurmd,run,log}
# munged refuses a socket folder that is not searchable by all, or writable by others
chmod 755 "$STATE" "$STATE/munge"

hw=$(slurmd -C | head -n1)
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
[[ -n $mem ]] || fail "could not read RealMemory from 'slurmd -C': $hw"
real_memory=$((mem * 95 / 100))   # at most what slurmd sees, or the node drains (Low RealMemory)
node_hw=$(tr ' ' '\n' <<<"$hw" | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | paste -sd' ')

sed -e "s|@HOST@|$HOST|g" -e "s|@STATE@|$STATE|g" -e "s|@PARTITION@|$PARTITION|g" \
    -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
    -e "s|@NODE_HW@|$node_hw|g" -e "s|@REAL_MEMORY@|$real_memory|g" \
    "$HERE/slurm.conf.in" >"$CONF.tmp"
mv "$CONF.tmp" "$CONF"
# slurm's own tools read /etc/slurm/slurm.conf unless SLURM_CONF is set: link it when free
if [[ ! -e /etc/slurm/slurm.conf && ! -L /etc/slurm/slurm.conf ]]; then
    mkdir -p /etc/slurm && ln -s "$CONF" /etc/slurm/slurm.conf && echo "$CONF" >"$STATE/run/etc-link"
fi

# --- munge ---------------------------------------------------------------------------
if [[ ! -s $STATE/munge/munge.key ]]; then
    say "creating a munge key ($STATE/munge/munge.key)"
    (umask 077 && dd if=/dev/urandom of="$STATE/munge/munge.key.tmp" bs=1024 count=1 status=none)
    mv "$STATE/munge/munge.key.tmp" "$STATE/munge/munge.key"
fi
chmod 400 "$STATE/munge/munge.key"
if ! alive munged "$STATE/run/munged.pid"; then
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    munged --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" --pid-file="$STATE/run/munged.pid" \
        --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed" \
        2>>"$STATE/log/munged.out" || fail "munged did not start"
fi
munge_ok() { munge -S "$MUNGE_SOCKET" -n | unmunge -S "$MUNGE_SOCKET"; }
wait_for "munged (munge -n | unmunge)" munge_ok

# --- slurmctld, slurmd ---------------------------------------------------------------
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! alive slurmctld "$STATE/run/slurmctld.pid"; then
    port_free "$CTLD_PORT" || fail "port $CTLD_PORT is taken: another slurmctld runs here (set AGGC_SLURM_CTLD_PORT or stop it)"
    slurmctld -f "$CONF" 2>>"$STATE/log/slurmctld.out" || fail "slurmctld did not start"
fi
wait_for "slurmctld (scontrol ping)" bash -c 'scontrol ping | grep -q UP'
if ! alive slurmd "$STATE/run/slurmd.pid"; then
    port_free "$SLURMD_PORT" || fail "port $SLURMD_PORT is taken: another slurmd runs here (set AGGC_SLURM_SLURMD_PORT or stop it)"
    slurmd -f "$CONF" 2>>"$STATE/log/slurmd.out" || fail "slurmd did not start"
fi

# --- wait for the node ---------------------------------------------------------------
deadline=$((SECONDS + TIMEOUT))
resumed=0
while :; do
    state=$(node_state || true)
    case $state in
        idle | mixed | allocated) break ;;
        down* | drain*)
            if ((resumed == 0)); then  # left down by an earlier run of this cluster
                scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
                resumed=1
            fi
            ;;
    esac
    ((SECONDS < deadline)) || fail "timed out after ${TIMEOUT}s waiting for node $HOST to be idle (state: '${state:-none}')"
    sleep 0.5
done
say "local Slurm started: node $HOST ($node_hw RealMemory=$real_memory) $state, partition $PARTITION"
echo "export SLURM_CONF=$CONF"
