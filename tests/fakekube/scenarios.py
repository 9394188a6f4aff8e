"""What a container does, chosen by its image.

Tests pick behaviour by image name instead of configuring the fake, so one
manifest builder in the handler can exercise every outcome. Every container of
a pod acts out its own image. Pure: parsing an image gives a frozen
:class:`Scenario`; the kubelet acts it out.

===========================  ==============================================
``scenario/succeed:SECS``    runs SECS seconds, exits 0
``scenario/sleep:SECS``      the same (named for deadline tests)
``scenario/fail:CODE``       runs briefly, exits CODE (default 1), ``Error``
``scenario/oom``             runs briefly, exits 137, ``OOMKilled``
``scenario/imagepull``       waits in ``ErrImagePull``, then ``ImagePullBackOff``
``scenario/invalid-image``   waits in ``InvalidImageName``
``scenario/configerror``     waits in ``CreateContainerConfigError``
``scenario/hold``            runs until ``FakeKube.finish`` ends it
``scenario/sidecar``         a proxy: runs until stopped, exits 0 on SIGTERM;
                             as a plain container it keeps the pod Running
                             after the others end (the classic sidecar trap)
``scenario/sidecar:exits``   the same, but exits 0 by itself once the pod's
                             other containers have ended (Istio's quitquitquit)
anything else                runs the default time, exits 0
===========================  ==============================================

A container stopped because its pod is deleted exits 143 (SIGTERM) unless its
scenario exits 0 on SIGTERM; one that never started reports the kubelet's
``ContainerStatusUnknown`` (137). Native sidecars (init containers with
``restartPolicy: Always``) run until the pod's regular containers have ended
and are then stopped by the kubelet. See :mod:`tests.fakekube.podadmission` for
the injected ``istio-proxy`` sidecar.
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
    sidecar: bool = False  # exits 0 on SIGTERM
    exits_with_others: bool = False  # a sidecar that exits 0 once the other containers ended


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
    if name == "sidecar":
        return Scenario(name, None, sidecar=True, exits_with_others=arg == "exits")
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
    """What the container prints when it starts: its image and bucket URLs (a sidecar: its name)."""
    if is_sidecar_image(container.get("image", "")):
        return [f"starting {container.get('image', '')}", f"{container.get('name')}: proxy ready"]
    env = {item.get("name"): item for item in container.get("env") or []}
    lines = [f"starting {container.get('image', '')}"]
    for name in LOGGED_ENV:
        item = env.get(name)
        if item is None:
            lines.append(f"{name}=<unset>")
        else:
            lines.append(f"{name}={item.get('value', '<valueFrom>')}")
    return lines


def is_sidecar_image(image: str) -> bool:
    match = _SCENARIO_IMAGE.search(image or "")
    return match is not None and match["name"] == "sidecar"


def end_lines(outcome: Outcome) -> list[str]:
    if outcome.succeeded:
        return ["done"]
    if outcome.reason == "OOMKilled":
        return ["Killed: out of memory"]
    if outcome.exit_code == 143:
        return ["received SIGTERM, exiting"]
    return [f"error: exiting with code {outcome.exit_code}"]
