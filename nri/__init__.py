"""The node NRI plugin: wraps the containers of opted-in pods with `nono wrap`."""

__all__: list[str] = []
