# Declarations of the per-connection state (module ordertrack.push._connection).
# picows 2.3.1 (pinned) ships picows.pxd: WSListener can be subclassed here and WSTransport's
# C fields (its write buffer, the upgrade's request and response) reached.
from picows.picows cimport WSFrame, WSListener, WSTransport


# what delivery.offer says about an update (push/delivery.py: the same ints)
cdef enum:
    SKIP = 0
    SEND = 1
    HOLD = 2
    OVERFLOW = 3
    NO_SEQ = -1          # an update without a `seq` (an error frame): never deduplicated


cdef class Connection(WSListener):
    # One customer's WebSocket (see push/connection.py, the twin): numbers and flags in C.
    cdef public object pod
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
    cdef public int hb_state
    cdef public bint registered
    cdef public bint acked
    cdef public bint cleaned

    cpdef on_ws_connected(self, WSTransport transport)
    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame)
    cpdef on_ws_disconnected(self, WSTransport transport)
    cpdef pause_writing(self)
    cpdef resume_writing(self)
    cdef int _offer(self, bytes frame, long long seq) except -1
    cdef int write_frame(self, bytes ws_frame) except -1
    cpdef check_pending(self)
    cpdef send_frame(self, bytes ws_frame)
    cpdef send(self, bytes payload)
    cpdef bint deliver(self, bytes frame, object seq) except -1
    cpdef close(self, object close, object message=*, bint abort=*)
    cpdef close_now(self, object close, object message=*, bint abort=*)


cpdef bytes text_frame(bytes payload)
