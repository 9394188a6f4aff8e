"""What a pod does, chosen by its first container's image.

Tests pick behaviour by image name instead of configuring the fake, so one
manifest builder in the handler can exercise every outcome. Pure: parsing an
image gives a frozen :class:`Scenario`; the kubelet acts it out.

===========================  ==============================================
``scenario/succeed:SECS``    runs SECS seconds, exits 0
``scenario/sleep:SECS``      the same (named for deadline tests)
``scenario/fail:CODE``       runs briefly, exits CODE (default 1), ``Error``
``scenario/oom``             runs briefly, exits 137, ``OOMKilled``
``scenario/imagepull``       waits in ``ErrImagePull``, then ``ImagePullBackOff``
``scenario/invalid-image``   waits in ``InvalidImageName``
``scenario/configerror``     waits in ``CreateContainerConfigError``
``scenario/hold``            runs until ``FakeKube.finish`` ends it
anything else                runs the default time, exits 0
===========================  ==============================================
"""

import re
from dataclasses import dataclass

_SCENARIO_IMAGE = re.compile(r"(?:^|/)scenario/(?P<name>[a-z-]+)(?::(?P<arg>[^/@]+))?$")
LOGGED_ENV = ("INPUT_BUCKET_URL", "OUTPUT_BUCKET_URL")


@dataclass(frozen=True)
class Outcome:
    """How a container terminated."""

    exit_code: int
    reason: str

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0

    @classmethod
    def of(cls, succeeded: bool, exit_code: int = 0, reason: str | None = None) -> "Outcome":
        if succeeded:
            return cls(0, reason or "Completed")
        return cls(exit_code or 1, reason or "Error")


@dataclass(frozen=True)
class Waiting:
    """A container state that never reaches running."""

    reason: str
    message: str


@dataclass(frozen=True)
class Scenario:
    name: str
    run_seconds: float | None = None  # None: runs until finished from outside
    outcome: Outcome = Outcome(0, "Completed")
    waiting: tuple[Waiting, ...] = ()  # successive waiting states; non-empty: never runs


def _number(text: str | None, default: float) -> float:
    try:
        return float(text) if text is not None else default
    except ValueError:
        return default


def parse(image: str, default_seconds: float, brief_seconds: float) -> Scenario:
    """The scenario ``image`` names; unknown or plain images run ``default_seconds``."""
    match = _SCENARIO_IMAGE.search(image or "")
    name, arg = (match["name"], match["arg"]) if match else ("default", None)
    if name in ("succeed", "sleep"):
        return Scenario(name, max(0.0, _number(arg, default_seconds)))
    if name == "fail":
        return Scenario(name, brief_seconds, Outcome(int(_number(arg, 1)) or 1, "Error"))
    if name == "oom":
        return Scenario(name, brief_seconds, Outcome(137, "OOMKilled"))
    if name == "hold":
        return Scenario(name, None)
    if name == "imagepull":
        reference = f"docker.io/{image}" + ("" if ":" in image.rsplit("/", 1)[-1] else ":latest")
        return Scenario(name, waiting=(
            Waiting("ErrImagePull", f'failed to pull and unpack image "{reference}": '
                                    f'pull access denied, repository does not exist or may require '
                                    f'authorization'),
            Waiting("ImagePullBackOff", f'Back-off pulling image "{image}"'),
        ))
    if name == "invalid-image":
        return Scenario(name, waiting=(Waiting(
            "InvalidImageName", f'Failed to apply default image tag "{image}": couldn\'t parse '
                                f'image name "{image}": invalid reference format'),))
    if name == "configerror":
        return Scenario(name, waiting=(Waiting("CreateContainerConfigError", 'secret "x" not found'),))
    return Scenario("default", default_seconds)


def start_lines(container: dict) -> list[str]:
    """What the container prints when it starts: its image and bucket URLs."""
    env = {item.get("name"): item for item in container.get("env") or []}
    lines = [f"starting {container.get('image', '')}"]
    for name in LOGGED_ENV:
        item = env.get(name)
        if item is None:
            lines.append(f"{name}=<unset>")
        else:
            lines.append(f"{name}={item.get('value', '<valueFrom>')}")
    return lines


def end_lines(outcome: Outcome) -> list[str]:
    if outcome.succeeded:
        return ["done"]
    if outcome.reason == "OOMKilled":
        return ["Killed: out of memory"]
    return [f"error: exiting with code {outcome.exit_code}"]
