"""Decisions of the NRI plugin: pure functions over `kubefence.nri.model` data.

* `decide_create` (CreateContainer): skip, reject, or the adjustment that
  wraps the container with `/nono/nono wrap --profile <p> --`.
* `validate_final` (ValidateContainerAdjustment): check the container as it
  will start, after every plugin's changes.
* `audit_synchronize` (Synchronize): find opted-in containers that run
  without the wrapper or with an untrusted /nono.

The wrapper passes the profile by name, not as a file path. nono looks a
name up in the user profile directory under `$XDG_CONFIG_HOME` (or
`$HOME/.config`) before its built-in profiles, and a user profile can shadow
a built-in name. The plugin pins both variables into the read-only /nono
mount (see `kubefence.nri.environment`), where no profile directory exists,
so the name resolves to the built-in profile. A profile file path would not
be enough on its own: the bases a profile `extends` are looked up by name in
the same directory, and every node would need profile files in the host
directory.

Nothing here does I/O, logs or reads a clock; the plugin shell logs the
returned Decision.
"""

from collections.abc import Iterable

from kubefence.common.contracts import NONO_BINARY_PATH, NONO_MOUNT_PATH, PROFILE_ANNOTATION, wrapper_prefix
from kubefence.common.profiles import InvalidProfileError, validate_profile
from kubefence.nri import seccomp
from kubefence.nri.config import PluginConfig, verify_hook_path
from kubefence.nri.environment import env_adjustment, env_problems, pinned_env_problems
from kubefence.nri.generator import apply_adjustment
from kubefence.nri.model import Adjustment, Container, Decision, Finding, Hook, Pod
from kubefence.nri.mounts import check_nono_mounts, nono_mount_adjustment

# NRI ContainerState value of a container that has exited.
CONTAINER_STOPPED = 4

_PREFIX_LENGTH = len(wrapper_prefix("p"))


def is_opted_in(pod: Pod, config: PluginConfig) -> bool:
    """Whether the pod's runtime handler is one the plugin wraps."""
    return pod.runtime_handler in config.runtime_handlers


def wrapped_profile(args: Iterable[str]) -> str | None:
    """Return the profile of args shaped `/nono/nono wrap --profile <p> -- ...`, or None.

    The profile slot is returned as it is, valid name or not. A prefix with
    nothing after "--" does not count as wrapped.
    """
    args = tuple(args)
    if len(args) <= _PREFIX_LENGTH:
        return None
    profile = args[3]
    if args[:_PREFIX_LENGTH] != tuple(wrapper_prefix(profile)):
        return None
    return profile


def resolve_profile(pod: Pod, config: PluginConfig) -> tuple[str, bool, str]:
    """Return (profile, fallback, problem) for an opted-in pod.

    `problem` is empty when the annotation names an allowed profile. When it
    does not, the profile is the configured default when
    `on_missing_profile` is "default" (and `fallback` is True), or "" when
    it is "reject".
    """
    value = pod.annotations.get(PROFILE_ANNOTATION)
    if value is None:
        problem = (
            f"annotation {PROFILE_ANNOTATION} is missing; set it to one of: {', '.join(config.allowed_profiles)}"
        )
    else:
        try:
            return validate_profile(value, config.allowed_profiles), False, ""
        except InvalidProfileError as error:
            problem = f"annotation {PROFILE_ANNOTATION}: {error}"
    if config.on_missing_profile == "default":
        return config.default_profile, True, problem
    return "", False, problem


def _pod_label(pod: Pod) -> str:
    return f"{pod.namespace}/{pod.name}" if pod.namespace or pod.name else pod.id


def _skip_not_opted_in(pod: Pod, config: PluginConfig) -> Decision:
    reason = (
        f"runtime handler {pod.runtime_handler!r} is not one of the wrapped handlers "
        f"({', '.join(config.runtime_handlers)})"
    )
    warning = ""
    if PROFILE_ANNOTATION in pod.annotations:
        warning = (
            f"pod {_pod_label(pod)} carries {PROFILE_ANNOTATION}={pod.annotations[PROFILE_ANNOTATION]!r}, "
            f"but its runtime handler {pod.runtime_handler!r} is not wrapped, so its containers run without nono"
        )
    return Decision(decision="skip", reason=reason, warning=warning)


def _check_args(args: tuple[str, ...], profile: str) -> tuple[bool, str]:
    """Return (needs_prefix, problem) for the args a create request carries."""
    if not args:
        return False, (
            "the container has no command (empty args), so there is nothing to wrap with nono; "
            "set command or args in the pod, or an ENTRYPOINT or CMD in the image"
        )
    present = wrapped_profile(args)
    if present == profile:
        return False, ""
    if present is not None:
        return False, (
            f"args already start with the nono wrapper for profile {present!r}, but this pod's profile is "
            f"{profile!r}; a container is wrapped once, with its pod's profile"
        )
    if tuple(args) == tuple(wrapper_prefix(profile)):
        return False, "args are the nono wrapper prefix with no command after '--'"
    return True, ""


def verify_hook(config: PluginConfig) -> Hook:
    """Return the createContainer hook that checks /nono, with the host directory as its argument."""
    path = verify_hook_path(config)
    return Hook(path=path, args=(path, config.nono_host_dir))


def _hook_adjustment(container: Container, config: PluginConfig) -> tuple[Hook, ...]:
    """Return the verify hook when it is on and the container does not carry it yet."""
    if not config.verify_hook:
        return ()
    hook = verify_hook(config)
    return () if hook in container.hooks else (hook,)


def decide_create(pod: Pod, container: Container, config: PluginConfig) -> Decision:
    """Decide what CreateContainer returns for `container` of `pod`.

    Not opted in: skip, no adjustment. Opted in: reject with a message that
    names the problem, or inject with the changes still missing. The
    adjustment sets args in the override form `("", *prefix, *args)` so
    an earlier plugin's claim on args does not fail the create. A container
    that already carries everything (because a second plugin instance gets
    the first one's changes in its request) gets an empty adjustment, so
    two instances never conflict and never wrap twice. With `verify_hook`
    on, the adjustment also appends the createContainer hook that checks
    /nono (see `verify_hook`), unless the request already carries it.
    """
    if not is_opted_in(pod, config):
        return _skip_not_opted_in(pod, config)

    profile, fallback, profile_problem = resolve_profile(pod, config)
    if not profile:
        return Decision(decision="reject", reason=profile_problem)

    needs_prefix, args_problem = _check_args(container.args, profile)
    problems = [args_problem] if args_problem else []
    problems.extend(env_problems(container.env))
    mount_check = check_nono_mounts(container.mounts, config.nono_host_dir)
    problems.extend(mount_check.problems)
    if problems:
        return Decision(decision="reject", reason="; ".join(problems), profile=profile, fallback=fallback)

    adjustment = Adjustment(
        args=("", *wrapper_prefix(profile), *container.args) if needs_prefix else None,
        env=env_adjustment(container.env, profile),
        mounts=nono_mount_adjustment(mount_check, config.nono_host_dir),
        seccomp=seccomp.seccomp_adjustment(config.seccomp_profile, container.seccomp_policy),
        hooks=_hook_adjustment(container, config),
    )
    if adjustment.is_empty():
        reason = f"already wrapped with profile {profile!r}, trusted read-only {NONO_MOUNT_PATH} and pinned env"
    else:
        reason = f"wrapped with profile {profile!r}"
    if fallback:
        reason += f" (fallback to default_profile because {profile_problem})"
    return Decision(decision="inject", reason=reason, profile=profile, adjustment=adjustment, fallback=fallback)


def _final_problems(container: Container, profile: str, config: PluginConfig) -> list[str]:
    """List how a container as it will start breaks the wrapping for `profile`."""
    problems = []
    if wrapped_profile(container.args) != profile:
        problems.append(
            f"final args {list(container.args[:_PREFIX_LENGTH + 1])!r}... do not start with the nono wrapper "
            f"{wrapper_prefix(profile)!r} followed by a command"
        )
    mount_check = check_nono_mounts(container.mounts, config.nono_host_dir)
    problems.extend(mount_check.problems)
    if not mount_check.problems and not mount_check.is_ok:
        problems.append(
            f"final mounts have no read-only bind mount of {config.nono_host_dir!r} at {NONO_MOUNT_PATH}"
        )
    problems.extend(pinned_env_problems(container.env, profile))
    if not seccomp.satisfies(config.seccomp_profile, container.seccomp_policy):
        problems.append(f"final seccomp policy does not meet seccomp_profile {config.seccomp_profile!r}")
    return problems


def validate_final(pod: Pod, container: Container, config: PluginConfig) -> Decision:
    """Check `container` as it will start, after all plugins' adjustments were applied.

    The shell builds `container` with `apply_adjustment(request container,
    merged adjustment)`. An opted-in container is rejected when it lacks the
    exact wrapper prefix, has anything but one trusted read-only /nono, or
    its pinned env differs. Containers of other handlers are skipped.
    """
    if not is_opted_in(pod, config):
        return _skip_not_opted_in(pod, config)
    profile, fallback, profile_problem = resolve_profile(pod, config)
    if not profile:
        return Decision(decision="reject", reason=profile_problem)
    problems = _final_problems(container, profile, config)
    if problems:
        return Decision(
            decision="reject",
            reason="another plugin's adjustment undoes the nono wrapping: " + "; ".join(problems),
            profile=profile,
            fallback=fallback,
        )
    return Decision(
        decision="inject", reason=f"final container is wrapped with profile {profile!r}", profile=profile,
        fallback=fallback,
    )


def audit_synchronize(pods: Iterable[Pod], containers: Iterable[Container], config: PluginConfig) -> list[Finding]:
    """Return a Finding for every opted-in, not stopped container that runs unwrapped.

    A container counts as unwrapped when its args lack the wrapper prefix
    (with a valid profile name) or its /nono is not exactly one trusted
    read-only mount. Containers whose pod is not in `pods` are not judged.
    Runs in time linear in the number of pods and containers.
    """
    opted_in = {pod.id: pod for pod in pods if is_opted_in(pod, config)}
    findings = []
    for container in containers:
        pod = opted_in.get(container.pod_sandbox_id)
        if pod is None or container.state == CONTAINER_STOPPED:
            continue
        reasons = []
        profile = wrapped_profile(container.args)
        if profile is None:
            reasons.append(f"args do not start with {NONO_BINARY_PATH} wrap --profile <profile> --")
        elif profile not in config.allowed_profiles:
            reasons.append(f"wrapped with profile {profile!r}, which is not in allowed_profiles")
        mount_check = check_nono_mounts(container.mounts, config.nono_host_dir)
        reasons.extend(mount_check.problems)
        if not mount_check.problems and not mount_check.is_ok:
            reasons.append(f"no read-only bind mount of {config.nono_host_dir!r} at {NONO_MOUNT_PATH}")
        if reasons:
            findings.append(
                Finding(
                    container_id=container.id,
                    pod=pod,
                    container_name=container.name,
                    reason="opted-in container running without nono: " + "; ".join(reasons),
                )
            )
    return findings
