"""Every package's `__all__` lists exactly its public names."""

import importlib

import pytest

PACKAGES = ["kubefence", "kubefence.common", "kubefence.webhook", "kubefence.nri", "kubefence.certs"]


@pytest.mark.parametrize("name", PACKAGES)
def test_exported_members_match_public_names(name):
    module = importlib.import_module(name)
    public = {
        attribute
        for attribute, value in vars(module).items()
        if not attribute.startswith("_") and getattr(value, "__module__", name).startswith(name)
        and not isinstance(value, type(module))
    }
    missing = public - set(module.__all__)
    assert not missing, f"public names missing from {name}.__all__: {sorted(missing)}"
    assert len(set(module.__all__)) == len(module.__all__), f"{name}.__all__ has duplicates"
    for attribute in module.__all__:
        assert hasattr(module, attribute), f"{name}.__all__ names {attribute!r}, which is not defined"
