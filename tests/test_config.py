import pytest

from handler.core.config import Settings, redact_url
from handler.core.errors import ConfigError


def test_defaults_match_the_seed_contract():
    s = Settings.from_env({})
    assert s.queue == "mstc.queue.work"
    assert s.exchange == "mstc.exchange"
    assert s.default_timeout_minutes == 15
    assert s.job_ttl_seconds == 30
    assert s.namespace == "mstc-dev"


def test_environment_variables_are_parsed_into_typed_fields():
    s = Settings.from_env({
        "CLOUD_WORKER_CONCURRENCY": "8", "CLOUD_WORKER_ONCE": "true", "CLOUD_WORKER_NAMESPACE": "jobs",
        "CLOUD_WORKER_ALLOWED_IMAGES": "registry.example.com/team, mstc",
        "CLOUD_WORKER_JOB_RESOURCES": '{"limits": {"memory": "512Mi"}}', "KUBECONFIG": "/tmp/kc",
    })
    assert (s.concurrency, s.once, s.namespace, s.kubeconfig) == (8, True, "jobs", "/tmp/kc")
    assert s.allowed_images == ("registry.example.com/team", "mstc")
    assert s.job_resources_spec == {"limits": {"memory": "512Mi"}}


def test_a_misspelled_setting_is_an_error_not_a_silent_default():
    with pytest.raises(ConfigError, match="CLOUD_WORKER_CONCURENCY"):
        Settings.from_env({"CLOUD_WORKER_CONCURENCY": "4"})


@pytest.mark.parametrize("name, value", [
    ("CLOUD_WORKER_CONCURRENCY", "many"),
    ("CLOUD_WORKER_ONCE", "perhaps"),
    ("CLOUD_WORKER_JOB_RESOURCES", "[1, 2]"),
    ("CLOUD_WORKER_CONCURRENCY", "0"),
    ("CLOUD_WORKER_MAX_TIMEOUT_MINUTES", "5"),
    ("CLOUD_WORKER_LOG_FORMAT", "xml"),
    ("CLOUD_WORKER_BACKEND", "docker"),
    ("CLOUD_WORKER_UNKNOWN_FIELDS", "warn"),
])
def test_bad_values_are_configuration_errors_naming_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_cli_overrides_beat_the_environment():
    s = Settings.from_env({"CLOUD_WORKER_QUEUE": "from-env"}, {"queue": "from-flag", "once": None})
    assert s.queue == "from-flag" and s.once is False


def test_redacted_settings_hide_the_broker_password():
    s = Settings.from_env({"CLOUD_WORKER_AMQP_URL": "amqp://user:hunter2@broker:5672/%2F"})
    assert "hunter2" not in str(s.redacted())
    assert redact_url("amqp://user:hunter2@broker/") == "amqp://user:***@broker/"
    assert redact_url("amqp://broker/") == "amqp://broker/"
    assert redact_url("amqp://broker/v@host") == "amqp://broker/v@host"


def test_service_link_variables_of_a_cloud_worker_service_are_not_taken_for_misspelt_settings():
    links = {"CLOUD_WORKER_MSTC_CLOUD_WORKER_SERVICE_HOST": "10.0.0.1", "CLOUD_WORKER_MSTC_CLOUD_WORKER_SERVICE_PORT": "80",
             "CLOUD_WORKER_MSTC_CLOUD_WORKER_SERVICE_PORT_HTTP": "80", "CLOUD_WORKER_MSTC_CLOUD_WORKER_PORT": "tcp://x:80",
             "CLOUD_WORKER_MSTC_CLOUD_WORKER_PORT_80_TCP_ADDR": "10.0.0.1"}
    assert Settings.from_env(links).queue == "mstc.queue.work"
    with pytest.raises(ConfigError, match="CLOUD_WORKER_QEUE"):
        Settings.from_env({**links, "CLOUD_WORKER_QEUE": "typo"})
    with pytest.raises(ConfigError, match="CLOUD_WORKER_HTTP_PROB_PORT"):  # a misspelt port is still a typo
        Settings.from_env({**links, "CLOUD_WORKER_HTTP_PROB_PORT": "8081"})


@pytest.mark.parametrize("name, value, says", [
    ("CLOUD_WORKER_CONCURRENCY", "abc", "expected a whole number"),
    ("CLOUD_WORKER_RETRY_DELAY_SECONDS", "soon", "expected a number"),
    ("CLOUD_WORKER_JOB_FAIL_FAST_EXIT_CODES", "2,x", "expected whole numbers separated by commas"),
    ("CLOUD_WORKER_JOB_RESOURCES", "{", "expected a JSON object"),
])
def test_a_value_that_does_not_parse_is_explained_in_words_not_pythons(name, value, says):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({name: value})
    assert str(raised.value).startswith(f"{name}={value!r}: {says}")
    for internal in ("invalid literal", "base 10", "could not convert", "Expecting", "char 0"):
        assert internal not in str(raised.value)
