"""Benchmarks fastrelay against direct qemu links, a naive netrelay-style relay and netrelay itself."""
