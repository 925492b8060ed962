"""Names and values that the webhook and the NRI plugin must agree on.

Changing one of these is a breaking change for clusters that run an older
webhook or plugin next to a newer one.
"""

# Pod annotation that carries the nono profile name. Same key as the
# reference kubefence Go plugin.
PROFILE_ANNOTATION = "nono.sh/profile"

# containerd 2.2+ and CRI-O 1.34+ refuse to create the containers of a pod
# with this annotation while a plugin it names is not registered, provided
# the NRI default validator is enabled. The value is a JSON list of names.
REQUIRED_PLUGINS_ANNOTATION = "required-plugins.noderesource.dev"

# Name the NRI plugin registers with, unless configured otherwise.
DEFAULT_PLUGIN_NAME = "kubefence"

# Read-only mount point of the trusted directory inside every container.
NONO_MOUNT_PATH = "/nono"

# The nono binary as the container sees it.
NONO_BINARY_PATH = "/nono/nono"

# Host directory that node-setup fills with the nono binary.
DEFAULT_HOST_DIR = "/opt/nono-nri"

# File name, in the host directory, of the OCI createContainer hook script
# that node-setup installs and the NRI plugin adds to wrapped containers.
VERIFY_HOOK_NAME = "kubefence-verify"

# Name of the pod volume the webhook injects.
NONO_VOLUME_NAME = "kubefence-nono"

# Kata Containers reads pod annotations with this prefix as configuration of
# the guest, including its agent policy.
KATA_ANNOTATION_PREFIX = "io.katacontainers."


def wrapper_prefix(profile: str) -> list[str]:
    """Build the argv that goes in front of a container's own args."""
    return [NONO_BINARY_PATH, "wrap", "--profile", profile, "--"]
