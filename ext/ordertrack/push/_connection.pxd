# The C layout of the per-connection state: augments src/ordertrack/push/connection.py (Cython's
# pure-Python mode), compiled by setup.py as ordertrack.push._connection. picows 2.3.1 (pinned)
# ships picows.pxd: WSListener can be subclassed here and WSTransport's C fields (its write
# buffer, the upgrade's request and response) reached.
from picows.picows cimport MemoryBuffer, WSFrame, WSListener, WSTransport


cdef extern from "<sys/socket.h>" nogil:
    ssize_t c_send "send"(int fd, const void* buf, size_t n, int flags)


cdef bytes c_text_frame(bytes payload)   # text_frame in C: the fan-out's too
cdef void _shrink_write_buffer(WSTransport transport)


cdef class Connection(WSListener):
    # One customer's WebSocket (see push/connection.py): numbers and flags in C.
    cdef public object events            # push/lifecycle.py's Lifecycle
    cdef public WSTransport transport
    cdef public str connection_id
    cdef public str user_id
    cdef public str order_id
    cdef public object carrier           # str or None until the ack
    cdef public str client_class
    cdef public object backlog           # [(seq, frame)] held until the ack, or None
    cdef public object resume_seq        # int or None
    cdef public object close_reason      # protocol.Close or None
    cdef public object ping_payload      # bytes or None
    cdef public double opened_at
    cdef public double last_ping
    cdef public double expires_at
    cdef public long long sent_seq
    cdef public Py_ssize_t held_bytes
    cdef public Py_ssize_t max_pending_bytes
    cdef public int hb_state
    cdef public bint registered
    cdef public bint acked
    cdef public bint cleaned

    cpdef on_ws_connected(self, WSTransport transport)
    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame)
    cpdef on_ws_disconnected(self, WSTransport transport)
    cpdef pause_writing(self)
    cpdef resume_writing(self)
    cpdef int offer(self, bytes frame, long long seq) except -1
    cpdef bint deliver(self, bytes frame, long long seq=*, bytes ws_frame=*) except -1
    cpdef write_frame(self, bytes ws_frame)
    cpdef check_pending(self)
    cpdef send(self, bytes payload)
    cpdef close(self, object close, object message=*)
    cpdef close_now(self, object close, object message=*)
