"""Defaults of the control plane, in one place."""

# `fastrelay` with no arguments runs a hub here (loopback only: no config, no exposure).
DEFAULT_HUB_HOST = "127.0.0.1"
DEFAULT_HUB_PORT = 5500
# Reconnect back-off of client targets: first delay, cap (seconds), growth, jitter share.
# A link must be back within a second of its peer's return (qemu guests restart in a few
# seconds; lima retries every 500 ms), so the cap, jitter included, is half a second: a
# peer that stays down gets two connection attempts a second, each a SYN answered by a
# RST or a refused unix connect, and one log line in all (later failures log at debug).
RECONNECT_INITIAL = 0.1
RECONNECT_MAX = 0.5
RECONNECT_FACTOR = 2.0
RECONNECT_JITTER = 0.2
# The back-off starts over only after a connection stayed up this long (seconds): a peer
# that accepts and closes at once is retried at growing delays, not in a storm.
RECONNECT_STABLE_AFTER = 2.0
# A client connection must not wait longer than this for the peer to answer (seconds).
CONNECT_TIMEOUT = 5.0
# TLS: a client must finish its handshake within this many seconds, or it is dropped (a
# stalled or plaintext client must not hold a listener's slot); range of the option.
TLS_HANDSHAKE_TIMEOUT = 5.0
TLS_TIMEOUT_RANGE = (0.1, 600.0)
# Listeners: the kernel's queue of clients not accepted yet, and how many are taken per
# wake-up (so one busy listener cannot hold the loop).
LISTEN_BACKLOG = 64
ACCEPTS_PER_WAKEUP = 64
# A listener out of descriptors or memory stops watching its socket and tries again
# after this back-off (seconds): no busy loop, and accepting again soon after it can.
ACCEPT_RETRY_INITIAL = 0.1
ACCEPT_RETRY_MAX = 2.0
# Listeners: clients served at once by one listener, and by all listeners of one relay
# (hub or link) together; the next client is accepted and closed at once (counted).
MAX_CLIENTS = 1024
MAX_CLIENTS_TOTAL = 4000

# Ranges of the numeric options, on the command line and in the config file alike: a
# value outside them (or inf, nan) is refused with one line. Seconds are bounded so that
# a timer can always be set; zero is refused where it would mean a busy loop.
QUEUE_MAX = 1 << 30                   # backlog bytes per port
QUEUE_TOTAL_MAX = 64 << 30            # backlog bytes of all ports of a link or hub
DELAY_RANGE = (0.001, 3600.0)         # reconnect_initial, reconnect_max
FACTOR_RANGE = (1.0, 10.0)            # reconnect_factor
JITTER_RANGE = (0.0, 1.0)             # reconnect_jitter (a share of the delay)
CONNECT_TIMEOUT_RANGE = (0.01, 600.0)
STOP_TIMEOUT_RANGE = (0.0, 60.0)
# max_clients, max_clients_total: a hub holds at most 4096 ports (its switch's slots,
# dataplane/switch.pxd), and its other targets need a few of them.
CLIENTS_RANGE = (1, 4000)
# Switch mode (and the learning a hub does to report loops and duplicate MACs): how long a
# MAC stays in the table unseen (seconds, the Linux bridge's default), how many entries
# it holds (learning stops there, counted), how many moves between ports per second make
# a loop, and how long a port stays blocked after one (seconds).
MAC_AGE = 300.0
MAC_TABLE_SIZE = 65536
LOOP_THRESHOLD = 5
LOOP_HOLD = 10.0
MAC_AGE_RANGE = (1.0, 86400.0)
MAC_TABLE_SIZE_RANGE = (16, 1 << 20)  # 1M entries: 48 MiB of table at most
LOOP_THRESHOLD_RANGE = (1, 10000)     # moves per second
LOOP_HOLD_RANGE = (0.1, 3600.0)
# The switch's housekeeping (holds that end, the sweep of expired MACs): every second.
SWITCH_TICK_INTERVAL = 1.0
# The most MAC table rows one stats answer shows (a full 64k table would make every answer
# megabytes of JSON); the rest are counted in `mac_table_omitted`.
STATS_MAC_TABLE_ROWS = 4096
# Batch wait (Hub.batch_wait, microseconds): after forwarding a few frames from a port that
# streams one frame per write, wait this long for more before looking again (0: never).
# The most a frame can wait for it; ping-pong and request/response traffic never waits.
BATCH_WAIT_US = 50
BATCH_WAIT_US_RANGE = (0, 1000)
# Socket buffers asked for datagram ports: bursts of a VM outrun the default 208 KiB.
DGRAM_SOCKET_BUFFER = 4 * 1024 * 1024
# How often -v prints counters (seconds).
STATS_INTERVAL = 1.0
# Graceful stop: how long queued frames may take to drain before sockets are closed.
STOP_FLUSH_TIMEOUT = 2.0
# Daemon: a link whose relay failed or ended is started again after this back-off, and its
# back-off starts over once a run lasted LINK_STABLE_AFTER seconds.
LINK_RESTART_INITIAL = 0.5
LINK_RESTART_MAX = 30.0
LINK_STABLE_AFTER = 10.0
# Daemon: where `fastrelay stats` looks for the control socket when not told otherwise.
CONTROL_SOCKET = "/run/fastrelay/control.sock"
# Log lines a peer can trigger at will (closes, accept errors, refused clients): at most
# LOG_BURST per cause in LOG_INTERVAL seconds, then one line counting the rest.
LOG_BURST = 5
LOG_INTERVAL = 10.0
LOG_CAUSES_MAX = 1024
# Daemon: an HTTP request (metrics) or control command must arrive within this time.
REQUEST_TIMEOUT = 5.0
# Daemon: the longest HTTP request head and control command line (bytes), the clients
# served at once, and how soon a busy or starved service listener looks again (seconds).
HTTP_HEAD_MAX = 16 * 1024
CONTROL_LINE_MAX = 64 * 1024
SERVICE_CLIENTS_MAX = 32
SERVICE_RETRY = 0.1
# After answering, a service reads and drops what a client still sends (so that closing
# does not reset the connection under the answer), up to this much and this long.
SERVICE_LINGER_BYTES = 4 << 20
SERVICE_LINGER = 1.0
# Capture (capture.py): the buffer each capture copies frames into (pcapng blocks; frames
# that find it full are dropped and counted), the bytes kept of each frame, how often
# the buffer is written out (a buffer a quarter full is also written after the hub's
# poll), how often a FIFO without a reader is tried again (seconds), how long a capture
# that ends may take to write out what it holds (seconds), the live captures
# (`fastrelay capture`) a daemon serves at once, and how many closed ports' interfaces
# a section keeps (beyond as many as are live) before a new section drops them.
CAPTURE_BUFFER = 4 << 20
CAPTURE_SNAPLEN = 262144
CAPTURE_FLUSH_INTERVAL = 0.01
CAPTURE_REOPEN_INTERVAL = 0.2
CAPTURE_FINISH_TIMEOUT = 1.0
# Bytes a capture file's writer thread may have queued, not yet written (beyond the
# buffer): it gets the GIL only between the loop's polls, so chunks queue meanwhile.
CAPTURE_WRITE_QUEUE = 16 << 20
CAPTURE_CLIENTS_MAX = 16
CAPTURE_STALE_INTERFACES = 64
# Ranges of the capture options: snap length, rotation size (bytes) and file count.
CAPTURE_SNAPLEN_RANGE = (1, 262144)
CAPTURE_SIZE_RANGE = (64 << 10, 1 << 40)
CAPTURE_COUNT_RANGE = (1, 100_000)
