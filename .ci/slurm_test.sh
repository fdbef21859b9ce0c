#!/usr/bin/env bash
# Runs experiments/tiny.toml as a Slurm job array (`drsae sweep --emit slurm`) on a one-node
# Slurm cluster started here for the purpose, and checks that summary.csv holds both runs with
# the numbers of a local `drsae sweep` of the same spec. Exits non-zero on any failure.
#
# Needs root (as CI has): installs Debian's slurm-wlm and munge if missing. Everything the
# cluster writes (munge key and socket, slurm.conf, state, logs) lives in a temporary folder,
# on random ports, so an existing munge or Slurm on the machine is neither used nor disturbed;
# the daemons are started directly (no systemd) and stopped by pid on exit.
set -euo pipefail
source "$(dirname "$0")/parallel_test.sh"

export DEBIAN_FRONTEND=noninteractive
if ! command -v slurmctld > /dev/null || ! command -v slurmd > /dev/null || ! command -v munged > /dev/null; then
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge > /dev/null
fi
build_drsae

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    local rc=$?
    if [ $rc -ne 0 ]; then
        for f in slurmctld.log slurmd.log munge/munged.log; do
            [ -f "$WORK/$f" ] && { echo "---- $f (tail)"; tail -n 30 "$WORK/$f"; }
        done
        for f in "$WORK"/batch/tiny/slurm/*.out; do
            [ -f "$f" ] && { echo "---- $f"; cat "$f"; }
        done
    fi
    # Cancel what may still run and give the job steps a moment to report back (a slurmstepd
    # outliving its slurmd lingers), then stop the daemons we started, newest first.
    if [ -n "${SLURM_CONF:-}" ] && command -v scancel > /dev/null; then
        scancel --quiet --user=root 2> /dev/null || true
        for _ in $(seq 20); do
            [ -z "$(squeue -h 2> /dev/null)" ] && ! pgrep -x slurmstepd > /dev/null && break
            sleep 0.5
        done
    fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill "${PIDS[$i]}" 2> /dev/null || true
        wait "${PIDS[$i]}" 2> /dev/null || true
    done
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT

# --- munge: a fresh key and a private socket ---
mkdir -p "$WORK/munge"
chmod 700 "$WORK/munge"
dd if=/dev/urandom of="$WORK/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$WORK/munge/munge.key"
SOCKET="$WORK/munge/munge.socket.2"
munged --foreground --force \
    --key-file="$WORK/munge/munge.key" --socket="$SOCKET" \
    --pid-file="$WORK/munge/munged.pid" --log-file="$WORK/munge/munged.log" \
    --seed-file="$WORK/munge/munged.seed" &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$SOCKET" ] && break; sleep 0.1; done
[ -S "$SOCKET" ] || { echo "FAIL: munged did not start"; exit 1; }
munge --socket="$SOCKET" -n | unmunge --socket="$SOCKET" > /dev/null
echo "munged is up"

# --- slurm: one node on localhost ---
HOST="$(hostname -s)"
CPUS=2
[ "$(nproc)" -lt 2 ] && CPUS="$(nproc)"
PORT=$((20000 + RANDOM % 20000))
mkdir -p "$WORK/state" "$WORK/spool"
export SLURM_CONF="$WORK/slurm.conf"
cat > "$SLURM_CONF" << CONF
ClusterName=drsae-ci
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=ci Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
slurmctld -D -c -f "$SLURM_CONF" > "$WORK/slurmctld.out" 2>&1 &
PIDS+=($!)
slurmd -D -f "$SLURM_CONF" > "$WORK/slurmd.out" 2>&1 &
PIDS+=($!)
STATE=""
for _ in $(seq 120); do
    STATE="$(sinfo -h -N -o '%T' 2> /dev/null | head -n 1 || true)"
    [ "$STATE" = idle ] && break
    sleep 0.5
done
if [ "$STATE" != idle ]; then
    echo "FAIL: the Slurm node is '${STATE:-unreachable}', not idle"
    cat "$WORK/slurmctld.out" "$WORK/slurmd.out"
    exit 1
fi
echo "slurm is up: node $HOST, $CPUS CPUs, port $PORT"

# --- the sweep: locally, and as a job array ---
"$DRSAE" sweep "$SPEC" "${DATA_FLAGS[@]}" --results-dir "$WORK/local"
"$DRSAE" sweep "$SPEC" "${DATA_FLAGS[@]}" --results-dir "$WORK/batch" --emit slurm
SCRIPT="$WORK/batch/tiny/sweep.slurm"
echo "sweep.slurm:"; cat "$SCRIPT"
grep -q '^#SBATCH --array=0-1$' "$SCRIPT" || { echo "FAIL: expected a 2-task array"; exit 1; }
# --wait returns when every array task has ended, with the highest exit code among them.
(cd "$WORK" && timeout 600 sbatch --wait "$SCRIPT")

compare_summaries "$WORK/batch/tiny/summary.csv" 2 "$WORK/local/tiny/summary.csv"
echo "slurm_test: OK"
