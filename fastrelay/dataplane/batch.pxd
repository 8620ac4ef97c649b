# FrameBatch: the frames one port hands to the hub in one go, as records in the reader's buffer.
from libc.stdint cimport int16_t, uint32_t

# Every frame inside the data plane is a qemu stream record: HDR_LEN bytes of big-endian
# length, then the frame. Stream readers get that layout from the wire for free; datagram
# and tap readers write the header themselves in front of each slot. So a stream peer is
# sent `rec[i]` for `HDR_LEN + length[i]` bytes and a datagram peer `rec[i] + HDR_LEN`.
# The memory belongs to the reading port and is valid only until Hub.forward() returns:
# a port that cannot send at once copies what it keeps into its own Backlog.
#
# `vnet` is an optional side array for frames read from a tap with IFF_VNET_HDR: vnet[i] is
# record i's virtio_net_hdr (checksum and GSO metadata), kept apart so that the record
# layout every other port relies on does not change. NULL means "plain frames" (every
# non-tap source). Owner and lifetime are those of `rec`: the reading port's memory, valid
# until Hub.forward() returns; Hub.new_batch() resets it to NULL and a tap reader sets it
# after that. Only a tap
# port reads it; others send the frame alone, so a source never leaves a frame that needs
# its header (a GSO super-frame, a checksum left to fill) in a batch while a plain port is
# attached: it completes or drops it first (see tap.pyx).
#
# `remote` is the other optional side array: for frames read from a VXLAN port, remote[i]
# is the index of the remote endpoint (VTEP) record i came from; handed to a VXLAN port by
# Switch.sub_batch(), it says where each frame goes (-1: every remote endpoint). NULL
# means "no remote endpoint" (every other source, and a flood). Owner and lifetime as for
# `vnet`: Hub.new_batch() resets it to NULL, the VXLAN reader sets it after that.
ctypedef struct FrameBatch:
    char **rec           # start of each record (its length header)
    uint32_t *length     # frame length of each record (header excluded)
    Py_ssize_t count     # records in use
    Py_ssize_t nbytes    # sum of frame lengths (headers excluded), for counters
    virtio_net_hdr *vnet  # NULL, or one vnet header per record (see above)
    int16_t *remote      # NULL, or one remote endpoint index per record (see above)
