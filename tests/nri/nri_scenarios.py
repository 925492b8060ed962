"""Objects of the NRI scenarios: pods `PS`/`PR`, containers `C(...)` and the plugin config.

The scenarios use `runtime_handlers = ["nono-runc"]`, `allowed_profiles =
["default", "swival"]`, `on_missing_profile = "reject"`, host directory `H`
and plugin index 10.
"""

from kubefence.nri.config import PluginConfig
from kubefence.nri.model import Container, Mount, Pod

H = "/opt/nono-nri"
M_OK = Mount(destination="/nono", type="bind", source=H, options=("rbind", "ro"))
BASE_ENV = ("PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root")

PS = Pod(
    id="pod-sb",
    name="agent-1",
    namespace="agents",
    uid="0c0ffee0-0000-4000-8000-00000000a001",
    runtime_handler="nono-runc",
    annotations={"nono.sh/profile": "default"},
)
PR = Pod(
    id="pod-plain",
    name="web-1",
    namespace="web",
    uid="0c0ffee0-0000-4000-8000-00000000a002",
    runtime_handler="runc",
    annotations={},
)


def make_container(container_id="ctr-a", args=("sleep", "3600"), *, pod=PS, **fields):
    """Build `C(id, pod, args)`: the shared env and `[M_OK]`, with `fields` overriding them."""
    values = {
        "id": container_id,
        "pod_sandbox_id": pod.id,
        "name": container_id,
        "args": tuple(args),
        "env": BASE_ENV,
        "mounts": (M_OK,),
    }
    values.update(fields)
    return Container(**values)


def make_config(**fields):
    values = {
        "runtime_handlers": ("nono-runc",),
        "default_profile": "default",
        "allowed_profiles": ("default", "swival"),
        "on_missing_profile": "reject",
        "nono_host_dir": H,
        "plugin_index": "10",
    }
    values.update(fields)
    return PluginConfig(**values)
