"""Test double of the WebUI's ``modules`` package. ``FLAVOR`` is set by ``host_double.Host`` before any
submodule is imported: "a1111" (1.10), "a1111-1.8", "forge" or "sdnext"."""

FLAVOR = "a1111"


def flavor_is(*names: str) -> bool:
    return FLAVOR in names
