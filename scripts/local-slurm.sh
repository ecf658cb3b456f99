#!/usr/bin/env bash
# A one-node Slurm on this machine, for tests:  scripts/local-slurm.sh start|stop|status
# start: installs slurmctld/slurmd/munge from the distribution when absent (needs root + apt),
# writes a one-node /etc/slurm/slurm.conf (accounting off; state under $SLURM_CI_DIR), starts munged, slurmctld and
# slurmd, and waits until the node is idle. Prints the SLURM_CONF to export. stop: kills the
# daemons it started, by their PID files. Exit 3 = Slurm cannot be set up on this machine (no
# root, no apt, the install failed: reason on stderr); exit 1 = the daemons failed to start.
# $SLURM_CI_DIR must be a path the slurm user can reach (not inside a 0700 folder).
set -euo pipefail
DIR=${SLURM_CI_DIR:-/tmp/diffattr-slurm}
# Job steps (srun inside an allocation) read the default config path, so the config lives there;
# an existing config of another cluster is never overwritten.
CONF=/etc/slurm/slurm.conf
cmd=${1:-status}

unavailable() { echo "local-slurm: $*" >&2; exit 3; }
fail() { echo "local-slurm: $*" >&2; exit 1; }

install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    && command -v sbatch >/dev/null && return 0
  [ "$(id -u)" = 0 ] || unavailable "slurm is not installed and installing it needs root"
  command -v apt-get >/dev/null || unavailable "slurm is not installed and apt-get is not available"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -qq >/dev/null || unavailable "apt-get update failed"
  timeout 600 apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null \
    || unavailable "apt-get install slurmctld slurmd slurm-client munge failed"
}

start() {
  install
  [ "$(id -u)" = 0 ] || unavailable "starting slurmd needs root"
  mkdir -p "$DIR"/{state,spool,log,run} /run/munge
  chmod 755 "$DIR"
  chown -R slurm:slurm "$DIR" 2>/dev/null || unavailable "no slurm user (package postinst did not run)"
  runuser -u slurm -- test -w "$DIR/state" || fail "the slurm user cannot write $DIR (a 0700 parent?)"
  chown munge:munge /run/munge
  [ -f /etc/munge/munge.key ] || fail "/etc/munge/munge.key missing"
  if [ -f "$CONF" ] && ! grep -q "^ClusterName=diffattrci" "$CONF"; then
    unavailable "$CONF belongs to another Slurm cluster; not touching it"
  fi
  mkdir -p /etc/slurm
  local host cpus mem
  host=$(hostname -s); cpus=$(nproc)
  mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  cat > "$CONF" <<CONF
ClusterName=diffattrci
SlurmctldHost=$host
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=300
DefMemPerCPU=1024
KillWait=5
NodeName=$host CPUs=$cpus RealMemory=$((mem - 1024)) State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  chown slurm:slurm "$CONF"
  if ! munge -n >/dev/null 2>&1; then
    # daemons must not hold the caller's stdout/stderr open (a caller reading them would hang)
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid </dev/null >/dev/null 2>&1 \
      || runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1 || fail "munged did not start"
    echo started > "$DIR/run/munged.ours"
  fi
  /usr/sbin/slurmctld -f "$CONF" </dev/null >/dev/null 2>&1 || fail "slurmctld did not start (see $DIR/log)"
  /usr/sbin/slurmd -f "$CONF" </dev/null >/dev/null 2>&1 || fail "slurmd did not start (see $DIR/log)"
  for _ in $(seq 120); do
    if SLURM_CONF=$CONF sinfo -h -o %T 2>/dev/null | grep -qx idle; then
      echo "SLURM_CONF=$CONF"
      return 0
    fi
    sleep 0.5
  done
  stop || true
  fail "the node did not become idle within 60 s (see $DIR/log)"
}

stop() {
  for pid in "$DIR/run/slurmd.pid" "$DIR/run/slurmctld.pid"; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  if [ -f "$DIR/run/munged.ours" ] && [ -f /run/munge/munged.pid ]; then
    kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    rm -f "$DIR/run/munged.ours"
  fi
  return 0
}

case $cmd in
  start) start ;;
  stop) stop ;;
  status) SLURM_CONF=$CONF sinfo ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
