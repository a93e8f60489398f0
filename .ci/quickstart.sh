#!/usr/bin/env bash
# The README's first command and its quick start, as a new user runs them in a
# fresh clone: `make up` (in its own process group, as a terminal runs it),
# wait for its ready line, run the commands of README.md's quick start block as
# they stand, then send SIGINT to make up's process group, as Ctrl-C does, and
# require a clean stop. Any failure exits 1 saying what went wrong, with the end
# of make up's output. Needs NATS, PostgreSQL and Redis on loopback and the
# gRPC and metrics ports of make up (50061, 50062, 50063, 9461, 9462, 9463) free. It removes
# the build output (dist/) first, since a fresh clone has none.
#
# make up creates a development instance in .dev/ (scripts/dev-instance.sh).
# When this run created it (no .dev/instance before, as in a fresh clone), the
# run deletes it at the end, pass or fail (scripts/clean-dev.sh: its streams,
# KV bucket, database, Redis keys, then .dev/), so CI leaves nothing on the
# servers; a failed deletion fails the run. An instance that existed before is
# the developer's: the run uses it and leaves it.
set -euo pipefail
cd "$(dirname "$0")/.."

READY_TIMEOUT_S=${SPOOL_CI_READY_TIMEOUT_SECONDS:-240}
QUICKSTART_TIMEOUT_S=${SPOOL_CI_QUICKSTART_TIMEOUT_SECONDS:-300}
STOP_TIMEOUT_S=${SPOOL_CI_STOP_TIMEOUT_SECONDS:-90}

log() { printf '[quickstart] %s\n' "$*"; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

work=$(mktemp -d)
up_log=$work/make-up.log
up_pid=
own_instance=
[ -e .dev/instance ] || own_instance=1

fail() {
  log "FAILED: $*"
  if [ -s "$up_log" ]; then
    log "last lines of make up's output ($up_log):"
    tail -n 40 "$up_log" | sed 's/^/  /'
  fi
  exit 1
}

# Whatever happened, leave no stack behind: SIGTERM to make up's group (make
# passes it on, make up stops the services), then SIGKILL if it hangs; then
# delete the instance if this run created it.
cleanup() {
  local status=$?
  if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
    log "stopping make up (SIGTERM)"
    kill -TERM -- "-$up_pid" 2>/dev/null || true
    for _ in $(seq 1 140); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$up_pid" 2>/dev/null || true
  fi
  if [ -n "$own_instance" ] && [ -e .dev/instance ]; then
    log "deleting this run's instance $(cat .dev/instance) (scripts/clean-dev.sh)"
    if ! bash scripts/clean-dev.sh 2>&1 | sed 's/^/  /'; then
      log "FAILED: could not delete this run's instance: state is left on the servers"
      status=1
    fi
  elif [ -e .dev/instance ]; then
    log "leaving instance $(cat .dev/instance) alone: .dev/instance existed before this run"
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

# The block after the quick-start marker in README.md, exactly as written there.
awk '/^<!-- quickstart/ { m = 1; next }
     m == 1 && /^```sh$/ { m = 2; next }
     m == 2 && /^```$/ { exit }
     m == 2 { print }' README.md >"$work/quickstart.sh"
grep -q 'bin/spool' "$work/quickstart.sh" || fail "no quick start block (after '<!-- quickstart') in README.md"

for port in 50061 50062 50063 9461 9462 9463; do
  ! listening "$port" || fail "127.0.0.1:$port is already in use; make up needs it"
done

# A fresh clone has no build output, and make up must not need one; but make
# test's `tsc -b` has just written it. Remove it (as make clean does), and the
# build info with it so that the next tsc -b rebuilds.
built=$(ls -d proto/dist packages/*/dist services/*/dist 2>/dev/null || true)
if [ -n "$built" ]; then
  log "removing build output, which a fresh clone does not have: $(echo $built)"
  # shellcheck disable=SC2086
  rm -rf $built proto/tsconfig.tsbuildinfo packages/*/tsconfig.tsbuildinfo services/*/tsconfig.tsbuildinfo
fi

# set -m: make up gets its own process group (so SIGINT to it is a Ctrl-C) and,
# unlike a plain background job of a script, does not start with SIGINT ignored.
log "make up"
set -m
make up </dev/null >"$up_log" 2>&1 &
up_pid=$!
set +m

deadline=$((SECONDS + READY_TIMEOUT_S))
until grep -q '^make up: ready' "$up_log"; do
  if ! kill -0 "$up_pid" 2>/dev/null; then
    status=0
    wait "$up_pid" || status=$?
    up_pid=
    fail "make up exited with status $status before it was ready"
  fi
  [ "$SECONDS" -lt "$deadline" ] || fail "make up was not ready after ${READY_TIMEOUT_S}s"
  sleep 1
done
log "$(grep -m1 '^make up: ready' "$up_log")"

log "running README.md's quick start:"
sed 's/^/  /' "$work/quickstart.sh"
status=0
PS4='+ ' timeout "$QUICKSTART_TIMEOUT_S" bash -xeuo pipefail "$work/quickstart.sh" \
  2> >(tee "$work/quickstart.err" >&2) || status=$?
sleep 0.2 # let tee finish
[ "$status" -eq 0 ] || fail "the quick start failed (status $status; 124 = timed out after ${QUICKSTART_TIMEOUT_S}s)"
# Both follows (from the start, and resumed after event 3) reached the end.
completed=$(grep -cE '^\[[0-9]+\] completed$' "$work/quickstart.err" || true)
[ "$completed" -ge 2 ] || fail "expected both follows to end with a completed event, saw $completed"
log "quick start passed: $completed follows ended with a completed event"

log "stopping make up with SIGINT (as Ctrl-C)"
kill -INT -- "-$up_pid"
deadline=$((SECONDS + STOP_TIMEOUT_S))
while kill -0 "$up_pid" 2>/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || fail "make up still running ${STOP_TIMEOUT_S}s after SIGINT"
  sleep 0.5
done
status=0
wait "$up_pid" || status=$?
up_pid=
# make reports an interrupt as 130 whatever its recipe did; make up's own verdict is its last line.
[ "$status" -eq 130 ] || fail "make up exited with status $status after SIGINT (expected 130, make's interrupt status)"
grep -q '^make up: stopped cleanly$' "$up_log" || fail "make up did not report a clean stop"
for port in 50061 50062 50063 9461 9462 9463; do
  ! listening "$port" || fail "127.0.0.1:$port still answers after make up stopped"
done
log "make up stopped cleanly"
