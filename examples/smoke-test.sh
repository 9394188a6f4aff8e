#!/usr/bin/env bash
# Send one work request through mstc-cloud-worker on a real cluster and wait for its reply.
#
# It port-forwards the RabbitMQ Service, reads the AMQP URL from the broker Secret, declares
# the work exchange and queue exactly as the handler does (durable, no arguments: in
# ScaledJob mode no handler has run yet, and KEDA cannot measure a queue that does not
# exist), publishes the seed's request with reply_to and correlation_id, and prints the
# CloudEvent reply. Exit 0 only when the Job succeeded.
#
# Needs kubectl (pointed at the cluster) and python3 with pika (pip install pika).
# Usage: examples/smoke-test.sh    (settings below, overridable from the environment)
set -euo pipefail

NAMESPACE="${NAMESPACE:-mstc-dev}"
RABBITMQ_SERVICE="${RABBITMQ_SERVICE:-rabbitmq}"       # Service of charts/dev/rabbitmq
BROKER_SECRET="${BROKER_SECRET:-mstc-broker}"          # holds amqp-url
EXCHANGE="${EXCHANGE:-mstc.exchange}"
QUEUE="${QUEUE:-mstc.queue.work}"
IMAGE="${IMAGE:-docker.io/library/hello-world:latest}" # prints a greeting and exits 0
JOB_NAME="${JOB_NAME:-smoke-test}"
BUCKET_URL="${BUCKET_URL:-http://minio.$NAMESPACE.svc:9000/mstc}"
JOB_TIMEOUT_MINUTES="${JOB_TIMEOUT_MINUTES:-5}"
WAIT_SECONDS="${WAIT_SECONDS:-600}"                     # includes KEDA starting a pod from zero
LOCAL_PORT="${LOCAL_PORT:-25672}"

command -v kubectl >/dev/null || { echo "smoke-test: kubectl is needed" >&2; exit 2; }
python3 -c 'import pika' 2>/dev/null || { echo "smoke-test: python3 with pika is needed (pip install pika)" >&2; exit 2; }

amqp_url="$(kubectl -n "$NAMESPACE" get secret "$BROKER_SECRET" -o jsonpath='{.data.amqp-url}' | base64 -d)"
[[ -n "$amqp_url" ]] || { echo "smoke-test: secret $BROKER_SECRET has no amqp-url" >&2; exit 2; }

kubectl -n "$NAMESPACE" port-forward "svc/$RABBITMQ_SERVICE" "$LOCAL_PORT:5672" >/dev/null &
forward=$!
trap 'kill "$forward" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$LOCAL_PORT") 2>/dev/null && break
    kill -0 "$forward" 2>/dev/null || { echo "smoke-test: port-forward to svc/$RABBITMQ_SERVICE failed" >&2; exit 2; }
    sleep 0.2
done

AMQP_URL="$amqp_url" LOCAL_PORT="$LOCAL_PORT" EXCHANGE="$EXCHANGE" QUEUE="$QUEUE" IMAGE="$IMAGE" \
JOB_NAME="$JOB_NAME" BUCKET_URL="$BUCKET_URL" JOB_TIMEOUT_MINUTES="$JOB_TIMEOUT_MINUTES" \
WAIT_SECONDS="$WAIT_SECONDS" python3 - <<'PY'
import json
import os
import sys
import time
import urllib.parse
import uuid

import pika

env = os.environ
# The Secret names the in-cluster host; reach it through the port-forward instead.
url = urllib.parse.urlsplit(env["AMQP_URL"])
userinfo = url.netloc.rpartition("@")[0]
local = url._replace(netloc=f"{userinfo}@127.0.0.1:{env['LOCAL_PORT']}" if userinfo else f"127.0.0.1:{env['LOCAL_PORT']}")
connection = pika.BlockingConnection(pika.URLParameters(urllib.parse.urlunsplit(local)))
channel = connection.channel()
channel.confirm_delivery()
channel.exchange_declare(env["EXCHANGE"], exchange_type="direct", durable=True)
channel.queue_declare(env["QUEUE"], durable=True)
channel.queue_bind(env["QUEUE"], env["EXCHANGE"], routing_key=env["QUEUE"])
reply_queue = channel.queue_declare("", exclusive=True).method.queue

correlation_id = str(uuid.uuid4())
request = {
    "image": env["IMAGE"],
    "jobName": env["JOB_NAME"],
    "timeOut": int(env["JOB_TIMEOUT_MINUTES"]),
    "inputBucketUrl": env["BUCKET_URL"],
}
channel.basic_publish(
    env["EXCHANGE"],
    env["QUEUE"],
    json.dumps(request).encode(),
    pika.BasicProperties(
        content_type="application/json",
        delivery_mode=2,
        message_id=str(uuid.uuid4()),
        correlation_id=correlation_id,
        reply_to=reply_queue,
    ),
    mandatory=True,
)
print(f"smoke-test: sent {json.dumps(request)} (correlation_id {correlation_id})", flush=True)

started = time.monotonic()
deadline = started + float(env["WAIT_SECONDS"])
for method, props, body in channel.consume(reply_queue, auto_ack=True, inactivity_timeout=5):
    if time.monotonic() > deadline:
        print(f"smoke-test: no reply within {env['WAIT_SECONDS']} s", file=sys.stderr)
        sys.exit(1)
    if method is None:
        print(f"smoke-test: waiting ({time.monotonic() - started:.0f} s)", flush=True)
        continue
    if props.correlation_id != correlation_id:
        continue
    event = json.loads(body)
    kind = str(event.get("type", ""))
    data = event.get("data") if isinstance(event.get("data"), dict) else event
    status = data.get("status", "")
    if kind.endswith((".accepted.v1", ".started.v1")):
        print(f"smoke-test: {kind}", flush=True)
        continue
    print(json.dumps(event, indent=2))
    print(f"smoke-test: {status or kind} after {time.monotonic() - started:.0f} s")
    sys.exit(0 if status == "succeeded" else 1)
PY
