#!/usr/bin/env bash
# Start the local RabbitMQ if nothing answers on 127.0.0.1:5672, then wait for it.
set -euo pipefail
port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if port_open; then exit 0; fi
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "RabbitMQ is not running on 127.0.0.1:5672 and rabbitmq-server is not installed." >&2
  echo "Install it (apt-get install rabbitmq-server) or point CLOUD_WORKER_AMQP_URL at a broker." >&2
  exit 1
fi
echo "starting rabbitmq-server ..." >&2
rabbitmq-server -detached
for _ in $(seq 1 120); do
  if port_open; then echo "RabbitMQ is up." >&2; exit 0; fi
  sleep 0.5
done
echo "RabbitMQ did not come up within 60 s" >&2
exit 1
