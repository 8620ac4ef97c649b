"""Defaults of the control plane, in one place."""

# `fastrelay` with no arguments runs a hub here (loopback only: no config, no exposure).
DEFAULT_HUB_HOST = "127.0.0.1"
DEFAULT_HUB_PORT = 5500
# Reconnect back-off of client targets: first delay, cap (seconds), growth, jitter share.
RECONNECT_INITIAL = 0.1
RECONNECT_MAX = 5.0
RECONNECT_FACTOR = 2.0
RECONNECT_JITTER = 0.2
# Socket buffers asked for datagram ports: bursts of a VM outrun the default 208 KiB.
DGRAM_SOCKET_BUFFER = 4 * 1024 * 1024
# How often -v prints counters (seconds).
STATS_INTERVAL = 1.0
