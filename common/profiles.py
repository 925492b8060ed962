"""The nono profile name rule, applied by the webhook and the NRI plugin alike."""

import re

# nono's own rule for profile names. A leading letter or digit also keeps a
# value from being read as a command-line flag.
_PROFILE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?")

PROFILE_NAME_RULE = (
    "1 to 64 characters of letters, digits and '-', "
    "not starting or ending with '-'"
)


class InvalidProfileError(ValueError):
    """A profile value that breaks the name rule or is not in an allow-list."""

    def __init__(self, message: str, value: object):
        super().__init__(message)
        self.value = value


def is_valid_profile_name(value: object) -> bool:
    return isinstance(value, str) and _PROFILE_NAME.fullmatch(value) is not None


def validate_profile(value: object, allowed: tuple[str, ...] | None = None) -> str:
    """Return `value` if it is a valid profile name that `allowed` contains.

    `allowed=None` checks the name rule only. The error message names the
    value with repr() and says what is accepted.
    """
    if not is_valid_profile_name(value):
        raise InvalidProfileError(
            f"invalid nono profile {value!r}: a profile name is {PROFILE_NAME_RULE}",
            value,
        )
    if allowed is not None and value not in allowed:
        raise InvalidProfileError(
            f"nono profile {value!r} is not allowed here; allowed profiles: {', '.join(allowed)}",
            value,
        )
    return value
