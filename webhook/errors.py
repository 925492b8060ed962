"""Errors of the admission webhook.

Two families, kept apart because they reach the caller differently:

* ``ReviewError``: the AdmissionReview itself is unusable (not JSON, wrong
  version, no uid, no object, a field of the wrong type). The server responds
  with an HTTP 4xx status and a short reason, and `kubefence review` exits 2.
  ``UnsupportedMediaTypeError`` and ``PayloadTooLargeError`` are the two
  kinds that carry another status than 400.
* A pod that breaks the sandbox rules is not an error: `decide` returns a
  denial, which the server sends back as an AdmissionReview with
  ``allowed: false`` and the message the user sees in kubectl.
"""


class ReviewError(ValueError):
    """An AdmissionReview request that cannot be decided on."""

    status_code = 400


class UnsupportedMediaTypeError(ReviewError):
    """A request body that is not sent as application/json."""

    status_code = 415


class PayloadTooLargeError(ReviewError):
    """A request body above the webhook's maximum size."""

    status_code = 413
