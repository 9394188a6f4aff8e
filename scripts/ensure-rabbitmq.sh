#!/usr/bin/env bash
# Make sure a RabbitMQ answers on 127.0.0.1:5672 with its management API on 15672.
#
# Idempotent: a broker that already answers is left as it is. Otherwise:
#   1. install Debian's rabbitmq-server when it is missing (as root; anyone else is told
#      the command to run),
#   2. enable the management plugin (KEDA's `protocol: http` trigger and the tests read
#      queue depths from it on 15672),
#   3. start the broker detached, on loopback only, and wait for both ports.
#
# Usage: bash scripts/ensure-rabbitmq.sh
set -euo pipefail

AMQP_PORT=5672
MANAGEMENT_PORT=15672
WAIT_SECONDS=90

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
    local port=$1 what=$2
    for _ in $(seq 1 $((WAIT_SECONDS * 2))); do
        port_open "$port" && return 0
        sleep 0.5
    done
    echo "ensure-rabbitmq: $what did not answer on 127.0.0.1:$port within ${WAIT_SECONDS} s" >&2
    echo "ensure-rabbitmq: the broker's log is under /var/log/rabbitmq/" >&2
    return 1
}

install_broker() {
    if [[ "$(id -u)" != 0 ]]; then
        echo "ensure-rabbitmq: rabbitmq-server is not installed. Install it as root:" >&2
        echo "    apt-get update && apt-get install -y rabbitmq-server" >&2
        echo "or point CLOUD_WORKER_AMQP_URL (and TEST_AMQP_URL for the tests) at a broker." >&2
        exit 1
    fi
    echo "ensure-rabbitmq: installing rabbitmq-server from Debian's packages ..." >&2
    apt-get update -qq
    # The package's own start is refused where there is no init system; we start it below.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
}

# A broker already answering (ours from an earlier run, or one the user runs) is used as is.
if port_open "$AMQP_PORT" && port_open "$MANAGEMENT_PORT"; then
    exit 0
fi

command -v rabbitmq-server >/dev/null 2>&1 || install_broker

if port_open "$AMQP_PORT"; then
    # Running, but without the management API: enable it on the live node.
    rabbitmq-plugins enable --quiet rabbitmq_management >/dev/null
    wait_for_port "$MANAGEMENT_PORT" "the management API"
    exit 0
fi

# --offline writes the enabled-plugins file without a running node; a no-op when enabled.
rabbitmq-plugins enable --offline --quiet rabbitmq_management >/dev/null
echo "ensure-rabbitmq: starting rabbitmq-server ..." >&2
# Loopback only: the guest user may only log in from there anyway.
RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-rabbitmq_management tcp_config [{ip,\"127.0.0.1\"},{port,$MANAGEMENT_PORT}]" \
    rabbitmq-server -detached
wait_for_port "$AMQP_PORT" "RabbitMQ"
wait_for_port "$MANAGEMENT_PORT" "the management API"
echo "ensure-rabbitmq: RabbitMQ $(rabbitmqctl -q version 2>/dev/null || echo '?') is up on 127.0.0.1:$AMQP_PORT (management on :$MANAGEMENT_PORT)" >&2
