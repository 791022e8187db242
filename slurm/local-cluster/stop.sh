#!/usr/bin/env bash
# Stop the local Slurm that start.sh started: cancel the jobs still in its queue (their
# processes would outlive slurmd otherwise), then end slurmd, slurmctld and munged, each
# by the pid in its pid file under the state folder (never by name). Daemons this script
# did not start are left alone. Keeps the state folder (config, key, logs): a later
# start.sh reuses it; delete slurm/local-cluster/.state to start from scratch.
#
#   slurm/local-cluster/stop.sh [--keep-jobs]
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${AGGC_SLURM_STATE:-$HERE/.state}
# shellcheck source=pids.sh
. "$HERE/pids.sh"
CONF=$STATE/slurm.conf
export SLURM_CONF=$CONF
KEEP_JOBS=0
[[ ${1:-} == --keep-jobs ]] && KEEP_JOBS=1

say() { echo "stop.sh: $*"; }


if ((KEEP_JOBS == 0)) && [[ -f $CONF ]] && live_pid slurmctld "$STATE/run/slurmctld.pid" >/dev/null; then
    jobs=$(timeout 10 squeue -h -o '%i' 2>/dev/null | paste -sd' ' || true)
    if [[ -n $jobs ]]; then
        say "cancelling jobs still queued or running: $jobs"
        mapfile -t ids < <(timeout 10 squeue -h -o '%A' | sort -u)
        ((${#ids[@]} == 0)) || timeout 10 scancel "${ids[@]}" || true
        for _ in $(seq 1 40); do  # KillWait (5 s) + margin for their processes to end
            [[ -z $(timeout 10 squeue -h -o '%i' 2>/dev/null || true) ]] && break
            sleep 0.5
        done
    fi
fi

stopped=0
for name in slurmd slurmctld munged; do
    pidfile=$STATE/run/$name.pid
    if pid=$(live_pid "$name" "$pidfile"); then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do
            [[ -e /proc/$pid ]] || break
            sleep 0.25
        done
        if [[ -e /proc/$pid ]]; then
            say "$name (pid $pid) did not end on SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        say "stopped $name (pid $pid)"
        stopped=$((stopped + 1))
    fi
    rm -f "$pidfile"
done

# the /etc/slurm/slurm.conf link start.sh made, if it still points here
if [[ -f $STATE/run/etc-link && -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$CONF" ]]; then
    rm -f /etc/slurm/slurm.conf "$STATE/run/etc-link"
fi
((stopped)) || say "no daemon of the local Slurm was running"
