"""The mutating admission webhook: opted-in pods get their nono profile and the /nono volume."""

__all__: list[str] = []
