# The compiled data plane: hub, ports and framing; never imports the control plane.
import os

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_SetFromErrno
from cpython.mem cimport PyMem_RawCalloc, PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from libc.string cimport memcmp, memcpy, memmove, memset

include "dataplane/util.pxi"
include "dataplane/errors.pyx"
include "dataplane/sockaddr.pyx"
include "dataplane/backlog.pyx"
include "dataplane/reassembler.pyx"
include "dataplane/port.pyx"
include "dataplane/hub.pyx"
include "dataplane/dgram.pyx"
include "dataplane/vxlan.pyx"
include "dataplane/stream.pyx"
include "dataplane/stdio.pyx"
include "dataplane/tap.pyx"
include "dataplane/tls.pyx"
include "dataplane/fdb.pyx"
include "dataplane/switch.pyx"
include "dataplane/capture.pyx"

FRAME_MIN_LEN = FRAME_MIN
FRAME_MAX_LEN = FRAME_MAX
DGRAM_MAX_LEN = DGRAM_MAX
QUEUE_DEFAULT_BYTES = QUEUE_DEFAULT
QUEUE_BUDGET_DEFAULT_BYTES = QUEUE_BUDGET_DEFAULT
DEBUG_BUILD = bool(FASTRELAY_DEBUG)
VXLAN_VNI_MAX_VALUE = VXLAN_VNI_MAX
VXLAN_PEERS_MAX_COUNT = VXLAN_PEERS_MAX

__all__ = (
    "Hub", "Port", "StreamPort", "DatagramPort", "VxlanPort", "StdioPort", "TapPort", "FrameReassembler",
    "QueueBudget", "MacTable", "TLSContext", "TLSSession", "TLSPort", "TLSError",
    "Switch", "Capture", "FrameError", "FRAME_MIN_LEN", "FRAME_MAX_LEN",
    "DGRAM_MAX_LEN", "QUEUE_DEFAULT_BYTES", "QUEUE_BUDGET_DEFAULT_BYTES", "DEBUG_BUILD",
    "TUN_CONSTANTS", "VXLAN_VNI_MAX_VALUE", "VXLAN_PEERS_MAX_COUNT",
)
