# FrameBatch: the frames one port hands to the hub in one go, as records in the reader's buffer.
from libc.stdint cimport uint32_t

# Every frame inside the data plane is a qemu stream record: HDR_LEN bytes of big-endian
# length, then the frame. Stream readers get that layout from the wire for free; datagram
# and tap readers write the header themselves in front of each slot. So a stream peer is
# sent `rec[i]` for `HDR_LEN + length[i]` bytes and a datagram peer `rec[i] + HDR_LEN`.
# The memory belongs to the reading port and is valid only until Hub.forward() returns:
# a port that cannot send at once copies what it keeps into its own Backlog.
ctypedef struct FrameBatch:
    char **rec           # start of each record (its length header)
    uint32_t *length     # frame length of each record (header excluded)
    Py_ssize_t count     # records in use
    Py_ssize_t nbytes    # sum of frame lengths (headers excluded), for counters
