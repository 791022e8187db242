# Sourced by start.sh and stop.sh: which daemons this cluster started, by pid file.

# the pid of pid file PIDFILE when it is a live NAME process (a stale file names nothing)
live_pid() {
    local name=$1 pidfile=$2 pid comm
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/comm ]] || return 1
    comm=$(<"/proc/$pid/comm") || return 1
    [[ $comm == "$name"* ]] || return 1
    echo "$pid"
}
