# Declarations of the compiled data plane, one include per part (uvloop's layout).
from libc.stdint cimport int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t
from fastrelay.includes.system cimport *
from fastrelay.includes.tun cimport *
from fastrelay.includes.openssl cimport *

include "dataplane/consts.pxi"
include "dataplane/batch.pxd"
include "dataplane/backlog.pxd"
include "dataplane/reassembler.pxd"
include "dataplane/fdb.pxd"
include "dataplane/switch.pxd"
include "dataplane/capture.pxd"
include "dataplane/port.pxd"
include "dataplane/hub.pxd"
include "dataplane/dgram.pxd"
include "dataplane/vxlan.pxd"
include "dataplane/stream.pxd"
include "dataplane/stdio.pxd"
include "dataplane/tap.pxd"
include "dataplane/tls.pxd"
