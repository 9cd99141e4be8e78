#!/usr/bin/env bash
# Compose smoke test: docker-compose.yml run for real, as users run it.
#   1. base images: the real node/redis images where a registry answers, else local stand-ins
#      (test/compose/stand-in-images.sh);
#   2. build with docker/Dockerfile as written; `up` with yolov8n from ../shared/models copied
#      into the ignored models/ folder; every container's healthcheck healthy;
#   3. bus.jpg through the gateway: a bus and at least 3 persons;
#   4. `--scale pre=2`: both replicas healthy and both complete jobs (their metrics);
#   5. the infer container's process killed (SIGKILL) while requests are in flight: the jobs it
#      held are taken up again (stalled-job check), every request answered 200 with the right
#      objects, and compose's restart policy brings the container back to healthy;
#   6. `down -v`: no container of the project left.
# It prints how long each phase took. It talks to the stack on 127.0.0.1 only.
#
# Engine: the one `docker info` reaches; otherwise (as root) a private dockerd started here with
# its own socket and data root under the work directory, stopped at the end, and the network
# settings it changed (iptables, ip_forward, docker0) restored.
#   usage: test/compose/smoke.sh            (npm run compose-smoke)
#   env:   SHARED (default ../shared beside the checkout: models/yolov8n.onnx and
#          data/samples/bus.jpg; missing: the test is skipped, or fails when CI is set),
#          SMOKE_PORT (host port of the gateway, default 19001), SMOKE_KILL (the service whose
#          container is killed: infer, pre or post; default infer), SMOKE_BASE_IMAGES (registry or
#          stand-in; default: registry when `docker pull` of the redis image succeeds within 30 s),
#          SMOKE_WORKDIR (default a new /tmp/compose-smoke.*; logs stay there on failure).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=${SHARED:-$ROOT/../shared}
MODEL=$SHARED/models/yolov8n.onnx
SAMPLE=$SHARED/data/samples/bus.jpg
PORT=${SMOKE_PORT:-19001}
KILL_SERVICE=${SMOKE_KILL:-infer}
PROJECT=sdsmoke

die() { echo "compose smoke: FAIL: $*" >&2; exit 1; }
# As the other tests: with CI set (to anything but 0 or false) nothing is skipped.
skip() {
  case "${CI:-}" in '' | 0 | false) ;; *) die "$* (CI is set: not skipped)" ;; esac
  echo "compose smoke: skipped: $*"; exit 0
}
[ -f "$MODEL" ] && [ -f "$SAMPLE" ] || skip "no $MODEL or $SAMPLE (set SHARED)"
case "$KILL_SERVICE" in pre | post | infer) ;; *) die "SMOKE_KILL must be pre, post or infer" ;; esac
command -v curl > /dev/null || die "curl is missing"
NODE=node; [ -x "$ROOT/node_modules/.bin/node" ] && NODE=$ROOT/node_modules/.bin/node

W=${SMOKE_WORKDIR:-$(mktemp -d /tmp/compose-smoke.XXXXXX)}
mkdir -p "$W"
T0=$(date +%s); TL=$T0
: > "$W/timings.txt"
phase() {
  local now; now=$(date +%s)
  local line; line=$(printf '### %-44s %4ss (total %ss)' "$1" $((now - TL)) $((now - T0)))
  echo "$line"
  # The work folder is gone by the last phase (the engine's cleanup removes it).
  if [ -d "$W" ]; then echo "$line" >> "$W/timings.txt"; fi
  TL=$now
}

# --- engine: the reachable one, or a private one (root) whose network changes are undone
DPID= ; COPIED_MODEL= ; UP=
if docker info > /dev/null 2>&1; then
  echo "engine: the one at ${DOCKER_HOST:-the default socket}"
else
  [ "$(id -u)" = 0 ] || skip "no Docker engine reachable, and not root to start one"
  command -v dockerd > /dev/null || skip "no dockerd (Debian: apt-get install docker.io)"
  export DOCKER_HOST=unix://$W/docker.sock
  iptables-save > "$W/iptables.before"
  FWD=$(cat /proc/sys/net/ipv4/ip_forward)
  HAD_DOCKER0=$(ip link show docker0 > /dev/null 2>&1 && echo 1 || echo 0)
  dockerd -H "$DOCKER_HOST" --data-root "$W/docker-data" --exec-root "$W/docker-exec" \
    --pidfile "$W/docker.pid" > "$W/dockerd.log" 2>&1 &
  DPID=$!
  for _ in $(seq 1 60); do docker info > /dev/null 2>&1 && break; sleep 1; done
  docker info > /dev/null 2>&1 || { tail -20 "$W/dockerd.log"; die "the private engine did not start"; }
  echo "engine: private dockerd (pid $DPID) at $DOCKER_HOST"
fi
if docker compose version > /dev/null 2>&1; then C=(docker compose); else C=(docker-compose); fi
# sed reads to the end: `head` would close the pipe early, and pipefail would end the script
# when docker-compose writes its next line into it.
"${C[@]}" version | sed -n 1p
C+=(-p "$PROJECT" -f "$ROOT/docker-compose.yml")

cleanup() {
  local rc=$?
  set +e
  if [ -n "$UP" ]; then
    [ "$rc" = 0 ] || "${C[@]}" logs --no-color --tail 40 > "$W/compose-logs.txt" 2>&1
    "${C[@]}" down -v --remove-orphans >> "$W/down.log" 2>&1
  fi
  [ -n "$COPIED_MODEL" ] && rm -f "$COPIED_MODEL"
  if [ -n "$DPID" ]; then
    kill "$DPID" 2> /dev/null
    for _ in $(seq 1 30); do kill -0 "$DPID" 2> /dev/null || break; sleep 1; done
    iptables-restore < "$W/iptables.before"
    echo "$FWD" > /proc/sys/net/ipv4/ip_forward
    [ "$HAD_DOCKER0" = 1 ] || ip link delete docker0 2> /dev/null
    rm -rf "$W/docker-data" "$W/docker-exec"
  fi
  if [ "$rc" = 0 ] && [ -z "${SMOKE_WORKDIR:-}" ]; then rm -rf "$W"; else echo "compose smoke: logs in $W"; fi
}
trap cleanup EXIT
if ss -ltn | grep ":$PORT " > /dev/null; then die "port $PORT is taken; set SMOKE_PORT"; fi
phase "engine"

# --- base images
NODE_TAG=$(sed -n 's/^ARG NODE_IMAGE=//p' "$ROOT/docker/Dockerfile" | sed -n 1p)
REDIS_TAG=$(sed -n 's/^ *image: *\(redis:[^ ]*\).*/\1/p' "$ROOT/docker-compose.yml" | sed -n 1p)
BASE=${SMOKE_BASE_IMAGES:-}
if [ -z "$BASE" ]; then
  if timeout 30 docker pull -q "$REDIS_TAG" > "$W/pull.log" 2>&1; then BASE=registry; else BASE=stand-in; fi
fi
case "$BASE" in
  registry) docker pull -q "$NODE_TAG" > /dev/null && docker pull -q "$REDIS_TAG" > /dev/null ;;
  stand-in)
    echo "no registry answers (docker pull $REDIS_TAG: $(tail -1 "$W/pull.log" 2> /dev/null)): stand-ins"
    "$ROOT/test/compose/stand-in-images.sh" "$W/stand-in" ;;
  *) die "SMOKE_BASE_IMAGES must be registry or stand-in" ;;
esac
phase "base images ($BASE)"

# --- build with the project's Dockerfile, through compose
cd "$ROOT"
"${C[@]}" build > "$W/build.log" 2>&1 || { tail -30 "$W/build.log"; die "build"; }
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' staged-detect
phase "build"

# --- up with the real model, every container healthy
if [ ! -f models/yolov8n.onnx ]; then cp "$MODEL" models/yolov8n.onnx; COPIED_MODEL=$ROOT/models/yolov8n.onnx; fi
export MODEL_PATH=/models/yolov8n.onnx PORT

# $1: the number of containers expected, all healthy; waits up to 180 s.
wait_healthy() {
  local n ok c
  for _ in $(seq 1 180); do
    n=0; ok=0
    for c in $("${C[@]}" ps -q); do
      n=$((n + 1))
      [ "$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c")" = healthy ] && ok=$((ok + 1))
    done
    [ "$n" = "$1" ] && [ "$ok" = "$1" ] && return 0
    sleep 1
  done
  "${C[@]}" ps; return 1
}
UP=1
"${C[@]}" up -d > "$W/up.log" 2>&1 || { cat "$W/up.log"; die "up"; }
NSVC=$("${C[@]}" ps -q | wc -l)
[ "$NSVC" = 5 ] || die "expected 5 containers (redis, infer, pre, post, gateway), got $NSVC"
wait_healthy "$NSVC" || die "not every container became healthy"
phase "up + $NSVC containers healthy"

# --- requests (loopback only)
printf '{"image":{"type":"base64","value":"%s"},"confidence":0.25}' "$(base64 -w0 "$SAMPLE")" > "$W/req.json"
# $1: a name; writes $W/resp-$1.json and $W/code-$1 ("<http code> <seconds>").
request() {
  curl -sS -m 60 -o "$W/resp-$1.json" -w '%{http_code} %{time_total}\n' \
    -X POST "http://127.0.0.1:$PORT/infer/object_detection" \
    -H 'Content-Type: application/json' --data-binary @"$W/req.json" > "$W/code-$1" 2> "$W/err-$1" \
    || echo "000 0" > "$W/code-$1"
}
# $@: names of requests made; each must be 200 with a bus and at least 3 persons.
check_answers() {
  local name code secs bad=0
  for name in "$@"; do
    read -r code secs < "$W/code-$name"
    if [ "$code" != 200 ]; then
      echo "request $name: HTTP $code after ${secs}s: $(head -c 300 "$W/resp-$name.json" 2> /dev/null; cat "$W/err-$name")" >&2
      bad=1
    fi
  done
  [ "$bad" = 0 ] || return 1
  (cd "$W" && "$NODE" -e '
    const fs = require("node:fs");
    let last = null;
    for (const name of process.argv.slice(1)) {
      const count = {};
      for (const p of JSON.parse(fs.readFileSync(`resp-${name}.json`, "utf8")).predictions)
        count[p.class] = (count[p.class] ?? 0) + 1;
      const text = Object.keys(count).sort().map((k) => `${k}=${count[k]}`).join(" ");
      if (!(count.bus >= 1 && count.person >= 3)) { console.error(`request ${name}: ${text}`); process.exit(1); }
      last = text;
    }
    console.log(`${process.argv.length - 1} answer(s) right (bus.jpg at confidence 0.25: ${last})`);
  ' "$@") || return 1
}
# $1: count, $2: name prefix, $3: concurrency; prints the names made.
burst() {
  local i names=() pids=()
  for i in $(seq 1 "$1"); do
    request "$2$i" &
    pids+=($!); names+=("$2$i")
    if [ $((i % $3)) = 0 ]; then wait "${pids[@]}"; pids=(); fi
  done
  [ ${#pids[@]} = 0 ] || wait "${pids[@]}"
  echo "${names[@]}"
}
request first
check_answers first || die "the first request"
phase "real-model request"

# --- --scale pre=2: both replicas take work
"${C[@]}" up -d --scale pre=2 >> "$W/up.log" 2>&1 || { tail -20 "$W/up.log"; die "up --scale pre=2"; }
wait_healthy $((NSVC + 1)) || die "not every container healthy after --scale pre=2"
# shellcheck disable=SC2046
check_answers $(burst 16 scale 4) || die "requests after --scale pre=2"
# $1: container, $2: metric name; the sum of its series in the container's metrics (port 9464,
# read from inside the container).
metric() {
  docker exec "$1" node -e '
    fetch("http://127.0.0.1:9464/metrics").then((r) => r.text()).then((t) => {
      let sum = 0;
      for (const m of t.matchAll(new RegExp(`^${process.argv[1]}(?:\\{[^}]*\\})? (\\S+)$`, "gm"))) sum += Number(m[1]);
      console.log(sum);
    });' "$2"
}
for c in $("${C[@]}" ps -q pre); do
  n=$(metric "$c" sd_stage_jobs_completed_total)
  echo "pre replica $(docker inspect -f '{{.Name}}' "$c"): $n jobs completed"
  [ "$n" -gt 0 ] || die "pre replica $(docker inspect -f '{{.Name}}' "$c") completed no job"
done
phase "scale pre=2, 16 requests, both replicas work"

# --- a container killed while requests are in flight
VICTIM=$("${C[@]}" ps -q "$KILL_SERVICE" | sed -n 1p)
VNAME=$(docker inspect -f '{{.Name}}' "$VICTIM")
NAMES=() PIDS=()
for i in $(seq 1 24); do request "kill$i" & PIDS+=($!); NAMES+=("kill$i"); done
sleep 0.7
INFLIGHT=0
for p in "${PIDS[@]}"; do kill -0 "$p" 2> /dev/null && INFLIGHT=$((INFLIGHT + 1)); done
# The container's main process is killed from the host, as the OOM killer or a crash ends it:
# `docker kill` is a stop by hand on Docker 20.10 (Debian's docker.io), after which the restart
# policy does not apply.
VPID=$(docker inspect -f '{{.State.Pid}}' "$VICTIM")
kill -9 "$VPID" || die "cannot kill $VNAME's process $VPID from here (the engine must run on this machine)"
echo "killed $VNAME ($KILL_SERVICE; kill -9 of its process $VPID) with $INFLIGHT of 24 requests in flight"
[ "$INFLIGHT" -gt 0 ] || die "no request was in flight at the kill; the check proves nothing"
wait "${PIDS[@]}"
check_answers "${NAMES[@]}" || die "a request in flight at the kill was lost"
printf 'slowest of them: %ss\n' "$(cut -d' ' -f2 "$W"/code-kill* | sort -g | tail -1)"
for _ in $(seq 1 60); do
  [ "$(docker inspect -f '{{.RestartCount}} {{.State.Running}}' "$VICTIM")" = "0 false" ] || break
  sleep 1
done
RESTARTS=$(docker inspect -f '{{.RestartCount}}' "$VICTIM")
[ "$RESTARTS" -ge 1 ] || die "$VNAME was not restarted by compose's restart policy"
wait_healthy $((NSVC + 1)) || die "$VNAME not healthy again after its restart"
echo "$VNAME restarted (restart count $RESTARTS) and healthy"
stalled=0
for c in $("${C[@]}" ps -q "$KILL_SERVICE"); do stalled=$((stalled + $(metric "$c" sd_stage_jobs_stalled_total))); done
echo "jobs of the killed $KILL_SERVICE taken up again by the stalled-job check: $stalled"
# infer holds a batch whenever requests are in flight, so its kill must have lost jobs; pre and
# post hold each job a few milliseconds, and a kill may land between jobs.
if [ "$KILL_SERVICE" = infer ] && [ "$stalled" = 0 ]; then
  die "the killed infer held no job; the check proved nothing"
fi
request after
check_answers after || die "a request after the restart"
phase "kill $KILL_SERVICE in flight, restart, all answered"

# --- down
"${C[@]}" down -v --remove-orphans > "$W/down.log" 2>&1 || { cat "$W/down.log"; die "down"; }
UP=
left=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$left" ] || die "containers left after down: $left"
phase "down"
trap - EXIT
cleanup
phase "engine stopped, network restored"
echo "compose smoke: OK"
