# Type stubs of the compiled data plane (fastrelay/_core.pyx): what Python code may use.
from collections.abc import Callable, Iterable
from typing import Any

FRAME_MIN_LEN: int
FRAME_MAX_LEN: int
DGRAM_MAX_LEN: int
QUEUE_DEFAULT_BYTES: int
QUEUE_BUDGET_DEFAULT_BYTES: int
DEBUG_BUILD: bool  # built with FASTRELAY_DEBUG=1 (bounds checks, -O0 -g)
TUN_CONSTANTS: dict[str, int]

class FrameError(ValueError): ...

class QueueBudget:
    limit: int
    used: int
    peak: int
    refused: int
    def __init__(self, limit: int = ...) -> None: ...

class FrameReassembler:
    bad_length: int
    runts: int
    def __init__(self, max_frame: int = ...) -> None: ...
    @property
    def pending(self) -> int: ...
    def feed_data(self, data: Any) -> list[bytes]: ...
    def feed_count(self, data: Any) -> int: ...

class Port:
    fd: int
    wfd: int
    name: str
    rx_frames: int
    rx_bytes: int
    tx_frames: int
    tx_bytes: int
    drop_queue: int
    drop_invalid: int
    drop_send: int
    drop_bounds: int
    def __init__(self, fd: int, name: str, *args: Any, queue_bytes: int = ...,
                 owns_fd: bool = ..., **kwargs: Any) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def queued_bytes(self) -> int: ...
    @property
    def queued_frames(self) -> int: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, int]: ...

class StreamPort(Port):
    def __init__(self, fd: int, name: str, *args: Any, max_frame: int = ...,
                 queue_bytes: int = ..., owns_fd: bool = ..., **kwargs: Any) -> None: ...

class DatagramPort(Port):
    gso: bool
    gro: bool
    gso_messages: int
    gro_messages: int
    send_errors: int
    last_send_errno: int
    rx_errors: int
    last_rx_errno: int
    def __init__(self, fd: int, name: str, *args: Any, family: int = ..., peer: Any = None,
                 learn_peer: bool = False, max_frame: int = ..., queue_bytes: int = ...,
                 owns_fd: bool = ..., **kwargs: Any) -> None: ...
    @property
    def has_peer(self) -> bool: ...

class StdioPort(Port):
    def __init__(self, fd: int, name: str, *args: Any, wfd: int = -1, max_frame: int = ...,
                 queue_bytes: int = ..., owns_fd: bool = ..., **kwargs: Any) -> None: ...

class TapPort(Port):
    nqueues: int
    offload: bool
    drop_gso: int
    csum_filled: int
    write_errors: int
    last_write_errno: int
    def __init__(self, fd: int, name: str, *args: Any, queues: Iterable[int] = (),
                 offload: bool = False, max_frame: int = ..., queue_bytes: int = ...,
                 owns_fd: bool = ..., **kwargs: Any) -> None: ...
    def close_queues(self) -> None: ...

class Hub:
    budget: QueueBudget
    def __init__(self, on_close: Callable[[Port, str, bool], object] | None = None,
                 budget: QueueBudget | None = None) -> None: ...
    def fileno(self) -> int: ...
    @property
    def ports(self) -> list[Port]: ...
    def add(self, port: Port) -> None: ...
    def remove(self, port: Port, reason: str | None = None, fault: bool = True) -> None: ...
    def stop_reading(self) -> None: ...
    def close(self) -> None: ...
    def poll(self) -> int: ...
