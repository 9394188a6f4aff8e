"""The whole loop over the real RabbitMQ and the fake API server: request in, Job run,
CloudEvent reply out, message acked."""


import pytest

from tests.support.requester import SEED_REQUEST

pytestmark = pytest.mark.integration


def test_the_seed_example_request_gets_a_succeeded_reply_with_its_correlation_id(handlers, requester, fakekube, namespace):
    handlers.start()
    cid = requester.submit()
    reply = requester.wait_reply(cid)
    assert reply["type"] == "mstc.cloud.worker.job.succeeded.v1"
    data = reply["data"]
    assert data["status"] == "succeeded" and data["exitCode"] == 0
    assert data["requestId"] == cid
    assert data["jobName"].startswith("test-job-")
    assert data["outputBucketUrl"] == SEED_REQUEST["inputBucketUrl"]
    assert "INPUT_BUCKET_URL" in data["logTail"]
    assert fakekube.created_jobs(namespace) == [data["jobName"]]
    assert requester.queue_depth() == 0
