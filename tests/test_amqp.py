"""The RabbitMQ adapter's pure parts: when a consumer may set its own delivery timeout."""

import pytest

from handler.adapters.amqp import consumer_arguments, consumer_timeout_supported
from handler.core.config import Settings


@pytest.mark.parametrize("version, supported", [
    ("3.10.8", False), ("3.11.14", False), ("3.11.15", True), ("3.12.0", True), ("3.13.7", True),
    ("4.1.0", True), (b"3.12.1", True), ("", False), (None, False), ("unknown", False),
])
def test_x_consumer_timeout_is_used_only_where_the_broker_supports_it(version, supported):
    assert consumer_timeout_supported(version) is supported


def test_the_consumer_timeout_outlasts_the_longest_job_a_request_may_ask_for():
    settings = Settings.from_env({"CLOUD_WORKER_MAX_TIMEOUT_MINUTES": "120",
                                  "CLOUD_WORKER_DEADLINE_SLACK_SECONDS": "30"})
    assert consumer_arguments("3.10.8", settings) is None
    timeout = consumer_arguments("3.12.0", settings)["x-consumer-timeout"]
    assert timeout > (120 * 60 + 30) * 1000
    assert timeout <= (120 * 60 + 30 + 120) * 1000
