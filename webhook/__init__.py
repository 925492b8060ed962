"""The mutating admission webhook: opted-in pods get their nono profile and the /nono volume.

`decide` and `build_response` (in `kubefence.webhook.mutation`) are the
pure decision and its AdmissionReview response. `kubefence.webhook.server`
serves them over HTTPS, and `kubefence.webhook.cli` adds the `webhook` and
`review` subcommands.
"""

from kubefence.webhook.errors import PayloadTooLargeError, ReviewError, UnsupportedMediaTypeError
from kubefence.webhook.mutation import AdmissionDecision, Reason, build_response, decide

__all__ = [
    "AdmissionDecision",
    "PayloadTooLargeError",
    "Reason",
    "ReviewError",
    "UnsupportedMediaTypeError",
    "build_response",
    "decide",
]
