"""Webhook TLS: CA and serving certificates, rotation and hot reload."""

__all__: list[str] = []
