"""kubefence: run untrusted pods on Kubernetes under the nono Landlock sandbox.

The components live in subpackages: `kubefence.common` (contracts, profile
rule, policy, logging), `kubefence.webhook` (admission webhook),
`kubefence.nri` (node NRI plugin) and `kubefence.certs` (webhook TLS).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
