# StdioPort: netrelay's `-` target; raw frames on stdin/stdout, for tests and pipelines.

cdef class StdioPort(Port):
    cdef:
        char *slot               # owned; DGRAM_SLOT bytes: header + one frame
        uint32_t max_frame       # longest frame accepted from stdin
