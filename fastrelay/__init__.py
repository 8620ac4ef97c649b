"""fastrelay: relay for qemu VM Ethernet traffic with a compiled, batched data plane."""

__version__ = "0.1.0"
__all__ = ["__version__"]
