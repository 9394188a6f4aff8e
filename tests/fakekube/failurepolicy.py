"""``spec.podFailurePolicy``: its validation and how a failed pod is matched against it.

Pure functions after the Kubernetes sources the docs' "Pod failure policy"
section describes (``pkg/controller/job/pod_failure_policy.go`` and
``pkg/apis/batch/validation``):

- Rules are tried in order; the first whose requirement holds decides. A rule
  has either ``onExitCodes`` (``containerName`` optional, ``operator`` In or
  NotIn, ``values``) — matched against the terminated containers and init
  containers with a non-zero exit code — or ``onPodConditions`` (``type`` and
  ``status``, e.g. DisruptionTarget/True), never both.
- ``FailJob`` fails the Job at once (reason ``PodFailurePolicy``, message naming
  the container or condition and the rule's index); ``Ignore`` neither counts the
  failure against ``backoffLimit`` nor in ``status.failed``, and the pod is
  replaced; ``Count`` (and no match) is the default backoff counting;
  ``FailIndex`` fails the pod's index (Indexed Jobs with ``backoffLimitPerIndex``).
- The API server requires ``restartPolicy: Never`` with a podFailurePolicy, and
  ``podReplacementPolicy: Failed`` (its default then), so the controller only
  judges pods that reached the Failed phase.
"""

ACTIONS = ("Count", "FailJob", "Ignore")
OPERATORS = ("In", "NotIn")
STATUSES = ("False", "True", "Unknown")
MAX_RULES = 20
MAX_VALUES = 255


def _cause(field: str, message: str, reason: str = "FieldValueInvalid") -> dict:
    return {"reason": reason, "message": message, "field": field}


def _quoted(values) -> str:
    return ", ".join(f'"{v}"' for v in values)


def _exit_codes_causes(path: str, requirement: dict, containers: set[str]) -> list[dict]:
    causes = []
    operator = requirement.get("operator")
    if not operator:
        causes.append(_cause(f"{path}.operator", f'Required value: valid values: ["{OPERATORS[0]}" '
                                                 f'"{OPERATORS[1]}"]', "FieldValueRequired"))
    elif operator not in OPERATORS:
        causes.append(_cause(f"{path}.operator", f'Unsupported value: "{operator}": supported values: '
                                                 f'{_quoted(OPERATORS)}', "FieldValueNotSupported"))
    name = requirement.get("containerName")
    if name is not None and name not in containers:
        causes.append(_cause(f"{path}.containerName", f'Invalid value: "{name}": must be one of the container '
                                                      'or initContainer names in the pod template'))
    values = requirement.get("values") or []
    if not values:
        causes.append(_cause(f"{path}.values", "Invalid value: []: at least one value is required"))
    elif len(values) > MAX_VALUES:
        causes.append(_cause(f"{path}.values", f"Too many: {len(values)}: must have at most {MAX_VALUES} items",
                             "FieldValueTooMany"))
    for index, value in enumerate(values):
        if operator == "In" and value == 0:
            causes.append(_cause(f"{path}.values[{index}]", "Invalid value: 0: must not be 0 for the In operator"))
        if value in values[:index]:
            causes.append(_cause(f"{path}.values[{index}]", f"Duplicate value: {value}", "FieldValueDuplicate"))
    if values != sorted(values):
        causes.append(_cause(f"{path}.values", f"Invalid value: {values}: must be ordered"))
    return causes


def _rule_causes(path: str, rule: dict, spec: dict, containers: set[str]) -> list[dict]:
    causes = []
    action = rule.get("action")
    if not action:
        causes.append(_cause(f"{path}.action", f"Required value: valid values: [{_quoted(ACTIONS)}]",
                             "FieldValueRequired"))
    elif action == "FailIndex":
        if spec.get("backoffLimitPerIndex") is None:
            causes.append(_cause(f"{path}.action", 'Invalid value: "FailIndex": requires the '
                                                   'backoffLimitPerIndex to be set'))
    elif action not in ACTIONS:
        causes.append(_cause(f"{path}.action", f'Unsupported value: "{action}": supported values: '
                                               f'{_quoted(ACTIONS)}', "FieldValueNotSupported"))
    on_codes, on_conditions = rule.get("onExitCodes"), rule.get("onPodConditions") or []
    if on_codes is not None:
        causes += _exit_codes_causes(f"{path}.onExitCodes", on_codes, containers)
    for index, pattern in enumerate(on_conditions):
        status = pattern.get("status")
        if status is not None and status not in STATUSES:
            causes.append(_cause(f"{path}.onPodConditions[{index}].status", f'Unsupported value: "{status}": '
                                 f'supported values: {_quoted(STATUSES)}', "FieldValueNotSupported"))
        if not pattern.get("type"):
            causes.append(_cause(f"{path}.onPodConditions[{index}].type", "Required value: name part must be "
                                 "non-empty", "FieldValueRequired"))
    if on_codes is not None and on_conditions:
        causes.append(_cause(path, "Invalid value: specifying both OnExitCodes and OnPodConditions is not supported"))
    if on_codes is None and not on_conditions:
        causes.append(_cause(path, "Invalid value: specifying one of OnExitCodes and OnPodConditions is required"))
    return causes


def validation_causes(spec: dict) -> list[dict]:
    """The 422 causes for a Job spec's podFailurePolicy (and what it requires of the spec)."""
    policy = spec.get("podFailurePolicy")
    if policy is None:
        return []
    pod_spec = (spec.get("template") or {}).get("spec") or {}
    causes = []
    restart = pod_spec.get("restartPolicy")
    if restart in ("OnFailure",):
        causes.append(_cause("spec.template.spec.restartPolicy", f'Invalid value: "{restart}": only "Never" is '
                                                                 "supported when podFailurePolicy is specified"))
    replacement = spec.get("podReplacementPolicy")
    if replacement not in (None, "Failed"):
        causes.append(_cause("spec.podReplacementPolicy", f'Unsupported value: "{replacement}": supported '
                                                          'values: "Failed"', "FieldValueNotSupported"))
    rules = policy.get("rules") or []
    if len(rules) > MAX_RULES:
        causes.append(_cause("spec.podFailurePolicy.rules", f"Too many: {len(rules)}: must have at most "
                                                            f"{MAX_RULES} items", "FieldValueTooMany"))
    containers = {c.get("name") for c in (pod_spec.get("containers") or []) + (pod_spec.get("initContainers") or [])}
    for index, rule in enumerate(rules):
        causes += _rule_causes(f"spec.podFailurePolicy.rules[{index}]", rule, spec, containers)
    return causes


def _exit_code_match(statuses: list[dict], requirement: dict) -> dict | None:
    values = set(requirement.get("values") or [])
    for status in statuses:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated is None or terminated.get("exitCode", 0) == 0:
            continue
        if requirement.get("containerName") not in (None, status.get("name")):
            continue
        inside = terminated["exitCode"] in values
        if inside == (requirement.get("operator") == "In"):
            return status
    return None


def match(policy: dict | None, pod: dict) -> tuple[str | None, str | None]:
    """``(action, message)`` for a failed pod: action None means no rule matched (count it);
    the message is set for ``FailJob`` only, worded as the Job controller words it."""
    if not policy:
        return None, None
    status, meta = pod.get("status") or {}, pod["metadata"]
    where = f"{meta['namespace']}/{meta['name']}"
    for index, rule in enumerate(policy.get("rules") or []):
        action = rule.get("action")
        if rule.get("onExitCodes") is not None:
            container = (_exit_code_match(status.get("containerStatuses") or [], rule["onExitCodes"])
                         or _exit_code_match(status.get("initContainerStatuses") or [], rule["onExitCodes"]))
            if container is None:
                continue
            code = container["state"]["terminated"]["exitCode"]
            return action, (f"Container {container['name']} for pod {where} failed with exit code {code} "
                            f"matching {action} rule at index {index}")
        for condition in status.get("conditions") or []:
            if any(condition.get("type") == p.get("type") and condition.get("status") == p.get("status", "True")
                   for p in rule.get("onPodConditions") or []):
                return action, f"Pod {where} has condition {condition['type']} matching {action} rule at index {index}"
    return None, None
