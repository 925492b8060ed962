"""The work behind `kubefence demo`; `kubefence.demo` has the overview and the options."""

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import yaml

from kubefence import kubelet_sim, oci
from kubefence.common.contracts import NONO_MOUNT_PATH
from kubefence.common.policy import DEFAULT_POLICY, HostPathSource, yaml_error_message
from kubefence.demo import EXIT_FAILED, EXIT_OK, SAMPLE_EXPECTED, SAMPLE_POD, DemoError
from kubefence.nri.config import PluginConfig
from kubefence.nri.decision import decide_create
from kubefence.nri.generator import apply_adjustment
from kubefence.nri.model import Container
from kubefence.webhook.offline import ManifestError, pod_from_manifest, review_pod

# The busybox image's config: no ENTRYPOINT, CMD ["sh"].
BUSYBOX_IMAGE = kubelet_sim.Image(cmd=("sh",))

# Path of the stand-in in a source checkout, relative to the repository root.
STANDIN_IN_CHECKOUT = Path("tests") / "e2e" / "nono_standin.py"

# Maximum length of an argument shown in full. Longer ones are cut to it, ending in "...".
MAX_SHOWN_ARG = 48


@dataclasses.dataclass(frozen=True)
class NonoSource:
    """The program that fills the /nono host directory: a real nono binary or the stand-in script."""

    path: Path
    is_standin: bool

    def describe(self) -> str:
        if self.is_standin:
            return f"nono stand-in built on nono-py ({self.path})"
        return f"nono binary {self.path}"


def find_nono(requested: str | None) -> NonoSource:
    """Return the nono to use: `requested`, else the stand-in of the source checkout."""
    if requested:
        path = Path(requested)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise DemoError(f"--nono {requested!r} is not an executable file")
        return NonoSource(path.resolve(), is_standin=False)
    checkout = Path(__file__).resolve().parent.parent
    standin = checkout / STANDIN_IN_CHECKOUT
    if not standin.is_file():
        raise DemoError(
            f"no nono for /nono/nono: pass --nono PATH (a nono release binary), or run kubefence "
            f"installed from a source checkout (pip install -e .), which has {STANDIN_IN_CHECKOUT}"
        )
    return NonoSource(standin, is_standin=True)


def load_pod(path: str | None) -> tuple[dict, str]:
    """Return the pod to run and its YAML text."""
    if path is None:
        text = SAMPLE_POD
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise DemoError(f"cannot read --pod {path!r}: {error.strerror}") from None
        except UnicodeDecodeError as error:
            raise DemoError(f"--pod {path!r} is not UTF-8 text (invalid byte at offset {error.start})") from None
    try:
        document = yaml.safe_load(text)
        pod, _ = pod_from_manifest(document)
    except yaml.YAMLError as error:
        raise DemoError(f"invalid pod manifest {path or 'sample'!r}: {yaml_error_message(error)}") from None
    except ManifestError as error:
        raise DemoError(f"invalid pod manifest {path or 'sample'!r}: {error}") from None
    return pod, text


def short_args(args) -> str:
    """Return args as a JSON list with long arguments cut."""
    cut = []
    for arg in args:
        if len(arg) > MAX_SHOWN_ARG:
            arg = arg[: MAX_SHOWN_ARG - 3] + "..."
        cut.append(arg)
    return json.dumps(cut)


def parse_accesses(output: str) -> dict[str, str]:
    """Return {access: 'allowed' or 'denied (error)'} from the sample pod's output lines."""
    results = {}
    for line in output.splitlines():
        access, separator, outcome = line.partition(": ")
        if separator and access in SAMPLE_EXPECTED:
            results[access] = outcome
    return results


class Demo:
    """One demo run in a temporary directory, printing each step to `out`."""

    def __init__(self, out: TextIO, workdir: Path, runc: oci.Runc, busybox: str, nono: NonoSource, timeout: float):
        self.out = out
        self.timeout = timeout
        self.workdir = workdir
        self.runc = runc
        self.busybox = busybox
        self.nono = nono
        self.host_dir = workdir / "opt-nono-nri"
        self.policy = dataclasses.replace(DEFAULT_POLICY, nono_volume=HostPathSource(path=str(self.host_dir)))
        self.config = PluginConfig(nono_host_dir=str(self.host_dir), state_dir=str(workdir / "nri-state"))

    def say(self, text: str = "") -> None:
        print(text, file=self.out)

    def heading(self, text: str) -> None:
        self.say()
        self.say(f"== {text}")

    def install_nono(self) -> None:
        if self.nono.is_standin:
            oci.install_nono_standin(self.host_dir, self.nono.path)
        else:
            oci.install_nono_binary(self.host_dir, self.nono.path)

    def admit(self, pod: Mapping) -> dict | None:
        """Run the admission decision and print it; return the patched pod, or None when denied."""
        decision, patched = review_pod(pod, self.policy)
        self.heading("2. Admission webhook")
        self.say(f"decision: {decision.decision} ({decision.reason}), profile: {decision.profile or '-'}")
        if not decision.allowed:
            self.say(f"denied: {decision.message}")
            return None
        if not decision.patch:
            self.say("JSON Patch: none, the pod stays as it is")
        else:
            self.say("JSON Patch (applied to the pod):")
        for operation in decision.patch:
            self.say(f"  {json.dumps(operation)}")
        return patched

    def create(self, pod: Mapping, container: Mapping, index: int) -> Container | None:
        """Run the NRI CreateContainer decision and print it; return the final container, or None on reject."""
        sandbox = kubelet_sim.sandbox(pod, "demo-sandbox")
        request = self.request(pod, container, index)
        decision = decide_create(sandbox, request, self.config)
        self.heading(f"3. NRI plugin, CreateContainer {container['name']!r} (runtime handler {sandbox.runtime_handler!r})")
        self.say(f"decision: {decision.decision} ({decision.reason})")
        if decision.decision == "reject":
            return None
        final = request if decision.adjustment is None else apply_adjustment(request, decision.adjustment)
        self.say(f"args before: {short_args(request.args)}")
        self.say(f"args after:  {short_args(final.args)}")
        if decision.adjustment is not None:
            for key, value in decision.adjustment.env:
                self.say(f"env:   {key}={value}")
        for mount in final.mounts:
            if mount.destination == NONO_MOUNT_PATH:
                self.say(f"mount: {mount.source} -> {mount.destination} ({','.join(mount.options)})")
        return final

    def request(self, pod: Mapping, container: Mapping, index: int) -> Container:
        empty_dirs = {}
        for volume in (pod.get("spec") or {}).get("volumes") or ():
            if "emptyDir" in volume:
                directory = self.workdir / "volumes" / f"{index}-{volume['name']}"
                directory.mkdir(parents=True, exist_ok=True)
                empty_dirs[volume["name"]] = str(directory)
        try:
            return kubelet_sim.create_request(
                pod, container, "demo-sandbox", f"demo-container-{index}", BUSYBOX_IMAGE, empty_dirs
            )
        except kubelet_sim.UnsupportedPodError as error:
            raise DemoError(f"cannot run the pod here: {error}") from None

    def start(self, container: Container, working_dir: str | None, name: str) -> oci.ContainerResult | None:
        """Run `container` to its end on a fresh busybox root filesystem; None when it timed out."""
        bundle = self.workdir / "bundles" / name
        oci.build_rootfs(bundle / "rootfs", self.busybox)
        spec = self.runc.base_spec(bundle)
        if self.nono.is_standin:
            spec["mounts"].extend(oci.python_runtime_mounts())
        kubelet_sim.apply_to_spec(spec, container, working_dir)
        try:
            return self.runc.run(bundle, spec, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return None


def run(args, out: TextIO) -> int:
    """Run the demo and return its exit code; raise DemoError when this machine cannot run it."""
    reason = oci.missing_requirement(args.busybox, args.runc)
    if reason:
        raise DemoError(f"cannot run containers here: {reason}")
    busybox = shutil.which(args.busybox)
    runc_path = shutil.which(args.runc)
    nono = find_nono(args.nono)
    pod, pod_text = load_pod(args.pod)

    with tempfile.TemporaryDirectory(prefix="kubefence-demo-") as workdir:
        workdir = Path(workdir)
        demo = Demo(out, workdir, oci.Runc(workdir / "runc-state", runc_path), busybox, nono, args.timeout)
        demo.install_nono()
        demo.say(f"kubefence demo: runc {runc_path}, busybox {busybox}, {nono.describe()}")
        demo.say("The webhook's and the NRI plugin's decisions run in this process, as their servers run them.")
        demo.heading("1. Pod")
        demo.say(pod_text.rstrip())

        patched = demo.admit(pod)
        if patched is None:
            return EXIT_FAILED
        status = EXIT_OK
        # Init containers first, as the kubelet starts them; `index` counts both lists.
        containers = [*(patched["spec"].get("initContainers") or ()), *(patched["spec"].get("containers") or ())]
        originals = [*(pod["spec"].get("initContainers") or ()), *(pod["spec"].get("containers") or ())]
        for index, (container, original) in enumerate(zip(containers, originals)):
            final = demo.create(patched, container, index)
            if final is None:
                return EXIT_FAILED
            status = max(status, report_run(demo, pod, original, container, final, index, sample=args.pod is None))
        return status


def report_run(
    demo: Demo, pod: Mapping, original: Mapping, container: Mapping, final: Container, index: int, sample: bool
) -> int:
    """Run the container with and without kubefence, print both results and judge them.

    `original` is the container as the pod manifest has it, `container` as
    admission left it, and `final` as the NRI plugin left it.
    """
    working_dir = container.get("workingDir")
    wrapped = demo.start(final, working_dir, f"{index}-wrapped")
    unwrapped = demo.start(demo.request(pod, original, index), working_dir, f"{index}-unwrapped")

    demo.heading(f"4. Container {container['name']!r} started by runc")
    for label, result in (("with kubefence", wrapped), ("without kubefence", unwrapped)):
        if result is None:
            demo.say(f"{label}: still running after {demo.timeout:g} s, stopped; use --timeout to wait longer")
            return EXIT_FAILED
    if not sample:
        for label, result in (("with kubefence", wrapped), ("without kubefence", unwrapped)):
            demo.say(f"{label}: exit code {result.exit_code}")
            demo.say(textwrap.indent((result.stdout + result.stderr).rstrip() or "(no output)", "  "))
        return EXIT_OK if wrapped.exit_code == 0 else EXIT_FAILED

    with_kubefence = parse_accesses(wrapped.stdout)
    without = parse_accesses(unwrapped.stdout)
    demo.say(f"{'access':<26} {'with kubefence':<30} without kubefence")
    for access in SAMPLE_EXPECTED:
        demo.say(f"{access:<26} {with_kubefence.get(access, 'no result'):<30} {without.get(access, 'no result')}")
    for line in wrapped.stdout.splitlines():
        if line.startswith("PID 1: "):
            demo.say(f"{line} (nono applied Landlock, then exec'd the pod's command)")

    demo.say()
    if not with_kubefence:
        demo.say(f"Result: the container stopped before the pod's command ran (exit code {wrapped.exit_code}):")
        demo.say(textwrap.indent((wrapped.stdout + wrapped.stderr).rstrip(), "  "))
        return EXIT_FAILED
    confined = all(
        with_kubefence.get(access, "").startswith(expected) for access, expected in SAMPLE_EXPECTED.items()
    )
    if confined:
        demo.say("Result: the profile's grants held. The two forbidden accesses failed and the two allowed ones worked.")
        return EXIT_OK
    demo.say("Result: NOT CONFINED AS EXPECTED; the container's output follows.")
    demo.say(textwrap.indent((wrapped.stdout + wrapped.stderr).rstrip(), "  "))
    return EXIT_FAILED
