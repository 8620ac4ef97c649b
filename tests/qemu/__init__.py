"""End-to-end tests that boot real qemu guests and pass their traffic through fastrelay."""
