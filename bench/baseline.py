"""The baseline: the queue-to-Job script a user writes in an afternoon.

pika consumer, the official ``kubernetes`` client, a Job per message, then
``read_namespaced_job_status`` once a second until it is done, a plain JSON reply, ack.
It is deliberately ordinary (no watch, no threads, no confirms): the benchmarks report
every figure of the handler as a ratio against this. Configured the way such scripts
are, by a few environment variables; ``ONCE=1`` handles one message and exits, and
``POLL_SECONDS`` (default 1) is only shortened by the bench's ``--smoke`` run.

    AMQP_URL=... QUEUE=... NAMESPACE=... KUBECONFIG=... python -m bench.baseline
"""

import json
import logging
import os
import time
import uuid

import pika
from kubernetes import client, config

log = logging.getLogger("baseline")


def job_manifest(name: str, request: dict) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 30,
            "activeDeadlineSeconds": int(request.get("timeOut") or 15) * 60,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "job",
                    "image": request["image"],
                    "env": [{"name": "INPUT_BUCKET_URL", "value": request["inputBucketUrl"]},
                            {"name": "OUTPUT_BUCKET_URL",
                             "value": request.get("outputBucketUrl") or request["inputBucketUrl"]}],
                }],
            }},
        },
    }


def run_job(batch: client.BatchV1Api, namespace: str, request: dict, poll_seconds: float) -> dict:
    name = f"{request['jobName']}-{uuid.uuid4().hex[:8]}"
    batch.create_namespaced_job(namespace, job_manifest(name, request))
    while True:
        status = batch.read_namespaced_job_status(name, namespace).status
        if status.succeeded or status.failed:
            return {"jobName": name, "status": "succeeded" if status.succeeded else "failed"}
        time.sleep(poll_seconds)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(created).6f %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)
    queue = os.environ.get("QUEUE", "mstc.queue.work")
    namespace = os.environ.get("NAMESPACE", "mstc-dev")
    config.load_kube_config()
    batch = client.BatchV1Api()
    connection = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
    channel = connection.channel()
    channel.queue_declare(queue=queue, durable=True)
    channel.basic_qos(prefetch_count=1)
    log.info("consuming %s", queue)
    for method, props, body in channel.consume(queue):
        log.info("received request %s", props.correlation_id)
        reply = run_job(batch, namespace, json.loads(body), float(os.environ.get("POLL_SECONDS", "1")))
        channel.basic_publish("", props.reply_to, json.dumps(reply).encode(),
                              pika.BasicProperties(correlation_id=props.correlation_id,
                                                   content_type="application/json"))
        channel.basic_ack(method.delivery_tag)
        if os.environ.get("ONCE") == "1":
            break
    connection.close()


if __name__ == "__main__":
    main()
