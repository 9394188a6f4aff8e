from pathlib import Path

import pytest

from handler.core.errors import ConfigError
from handler.service.backends.localimages import load_image_map, parse_image_map

REPO = Path(__file__).resolve().parents[1]

TEXT = """
[images."mstc/python-test"]
command = ["python", "{here}/python-test/main.py"]
env = { SLEEP_SECONDS = "1" }

[images."mstc/python-test:2"]
command = ["python", "v2.py"]

[images."python"]
command = ["python", "-V"]
"""


def image_map():
    return parse_image_map(TEXT, "images.toml", Path("/opt/examples"))


@pytest.mark.parametrize("image, command", [
    ("mstc/python-test", ("python", "/opt/examples/python-test/main.py")),
    ("mstc/python-test:latest", ("python", "/opt/examples/python-test/main.py")),
    ("docker.io/mstc/python-test:1.0", ("python", "/opt/examples/python-test/main.py")),
    ("mstc/python-test:2", ("python", "v2.py")),
    ("docker.io/library/python:3.12", ("python", "-V")),
    ("python@sha256:" + "a" * 64, ("python", "-V")),
])
def test_an_image_finds_its_tag_first_then_its_repository_after_normalising(image, command):
    assert image_map().lookup(image).command == command


@pytest.mark.parametrize("image", ["mstc/other", "registry.example.com/mstc/python-test", "NOT A REFERENCE", ""])
def test_an_image_the_file_does_not_map_finds_nothing(image):
    assert image_map().lookup(image) is None


def test_an_entry_carries_its_environment():
    assert image_map().lookup("mstc/python-test").env == {"SLEEP_SECONDS": "1"}


@pytest.mark.parametrize("text, complaint", [
    ("not = [toml", "not valid TOML"),
    ("", "at least one"),
    ('[images."x"]\nenv = {}', "command must be"),
    ('[images."x"]\ncommand = []', "command must be"),
    ('[images."x"]\ncommand = ["a", 1]', "command must be"),
    ('[images."x"]\ncommand = ["a"]\nenv = { A = 1 }', "env must be"),
    ('[images."x"]\ncommand = ["a"]\nentrypoint = "b"', "unknown key"),
    ('[images."Not Valid"]\ncommand = ["a"]', "Not Valid"),
])
def test_a_broken_images_file_is_a_configuration_error_saying_where(text, complaint):
    with pytest.raises(ConfigError, match=complaint):
        parse_image_map(text, "images.toml", Path("."))


def test_the_example_file_maps_the_seeds_test_image_to_the_job_toolkit():
    entry = load_image_map(REPO / "examples" / "images.toml").lookup("mstc/python-test:latest")
    assert entry.command[:3] == ("cloud-worker", "job", "--")
    assert Path(entry.command[-1]) == REPO / "examples" / "python-test" / "main.py"
    assert Path(entry.command[-1]).is_file()


def test_a_missing_images_file_is_a_configuration_error_naming_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="CLOUD_WORKER_LOCAL_IMAGES"):
        load_image_map(tmp_path / "nope.toml")
