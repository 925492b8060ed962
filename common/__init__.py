"""What the webhook and the NRI plugin share: contracts, the profile rule, policy and logging.

This package imports nothing from `kubefence.webhook`, `kubefence.nri` or
`kubefence.certs`.
"""

from kubefence.common.contracts import (
    DEFAULT_HOST_DIR,
    DEFAULT_PLUGIN_NAME,
    KATA_ANNOTATION_PREFIX,
    NONO_BINARY_PATH,
    NONO_MOUNT_PATH,
    NONO_VOLUME_NAME,
    PROFILE_ANNOTATION,
    REQUIRED_PLUGINS_ANNOTATION,
    wrapper_prefix,
)
from kubefence.common.policy import DEFAULT_POLICY, Policy, load_policy
from kubefence.common.profiles import InvalidProfileError, is_valid_profile_name, validate_profile
from kubefence.common.settings import ConfigError

__all__ = [
    "DEFAULT_HOST_DIR",
    "DEFAULT_PLUGIN_NAME",
    "DEFAULT_POLICY",
    "KATA_ANNOTATION_PREFIX",
    "NONO_BINARY_PATH",
    "NONO_MOUNT_PATH",
    "NONO_VOLUME_NAME",
    "PROFILE_ANNOTATION",
    "REQUIRED_PLUGINS_ANNOTATION",
    "ConfigError",
    "InvalidProfileError",
    "Policy",
    "is_valid_profile_name",
    "load_policy",
    "validate_profile",
    "wrapper_prefix",
]
