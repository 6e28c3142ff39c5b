# cython: language_level=3
"""Cython per-connection state: the same behaviour and attribute names as
`ordertrack.push.connection.PureConnection` (that module's docstring has the rules).

What it saves per connection: C fields for the numbers and flags (no boxed floats and ints),
picows' write buffer shrunk from 1,024 to 128 bytes after the handshake, and the upgrade's
request and response objects dropped. Both of the latter reach into picows' WSTransport
through picows.pxd and so depend on picows 2.3.1's layout (pinned in pyproject.toml; Cython
checks the type's size when this module is imported).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport INFINITY
from libc.string cimport memcpy
from picows.picows cimport MemoryBuffer, WSCloseCode, WSMsgType

from ordertrack import protocol
from ordertrack.flags.client_class import NATIVE


cdef extern from "<sys/socket.h>" nogil:
    ssize_t send(int fd, const void* buf, size_t n, int flags)

cdef object SLOW_CONSUMER = protocol.SLOW_CONSUMER
cdef object CLIENT_CLOSE = protocol.CLIENT_CLOSE
cdef object frame_violation = protocol.frame_violation
cdef object close_reply = protocol.close_reply
cdef object error_frame = protocol.error
cdef str _NATIVE = NATIVE
cdef bytes INVALID_CLOSE_CODE = b"invalid close code"

# After the 101, picows' write buffer carries only control frames: our pings (8 bytes), pongs
# and close frames (payload <= 125 bytes, RFC 6455 5.5), header 2 bytes; data frames are
# written whole to the transport (write_frame). 128 bytes hold any of them; picows grows the
# buffer again itself (MemoryBuffer.resize -> _reserve, PyMem_Realloc) if it ever needs more.
cdef enum:
    CONTROL_FRAME_BUFFER = 128


cpdef bytes text_frame(bytes payload):
    """A whole server-to-client WebSocket text frame (FIN, unmasked: RFC 6455 5.2)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    cdef Py_ssize_t h = 2 if n < 126 else (4 if n < 65536 else 10)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n + h)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    cdef int i
    p[0] = 0x81
    if n < 126:
        p[1] = <unsigned char>n
    elif n < 65536:
        p[1] = 126
        p[2] = (n >> 8) & 0xFF
        p[3] = n & 0xFF
    else:
        p[1] = 127
        for i in range(8):
            p[2 + i] = (n >> (56 - 8 * i)) & 0xFF
    memcpy(p + h, PyBytes_AS_STRING(payload), n)
    return out


cdef inline void _shrink_write_buffer(WSTransport transport):
    """picows allocates a 1,024-byte write buffer per connection and never shrinks it; ours
    only ever carries control frames, so 128 bytes do (~900 B less per connection). Reaches
    into WSTransport._write_buffer (a MemoryBuffer: data, capacity, size) as picows 2.3.1 lays
    it out (pinned in pyproject.toml, both as a dependency and for the build)."""
    cdef MemoryBuffer buf = transport._write_buffer
    cdef char* data
    if buf is None or buf.capacity <= CONTROL_FRAME_BUFFER:
        return
    data = <char*>PyMem_Malloc(CONTROL_FRAME_BUFFER)
    if data == NULL:
        return  # keep the big one
    # empty between sends: picows writes a frame out (or copies it into the transport) before
    # send() returns, and the 101 went out through the transport, not this buffer
    PyMem_Free(buf.data)
    buf.data = data
    buf.capacity = CONTROL_FRAME_BUFFER
    buf.size = 0


cdef class Connection(WSListener):
    def __init__(self, pod, str connection_id, str user_id, str order_id, resume,
                 double expires_at=INFINITY, str client_class=_NATIVE):
        self.pod = pod
        self.transport = None
        self.connection_id = connection_id
        self.user_id = user_id
        self.order_id = order_id
        self.carrier = None
        self.opened_at = 0.0
        self.last_ping = 0.0
        self.hb_state = 0  # connection.HB_PING_DUE
        self.registered = False
        self.acked = False
        self.sent_seq = 0
        self.backlog = None
        self.held_bytes = 0
        self.resume_seq = None
        if resume is not None and resume.kind == "resume":
            self.resume_seq = resume.last_seq
        elif resume is not None:  # a bad ?last_seq=: say so right after the ack
            self.backlog = [(None, error_frame(resume.error_code, resume.error_message))]
        self.close_reason = None
        self.cleaned = False
        self.expires_at = expires_at
        self.ping_payload = None
        self.client_class = client_class

    @property
    def max_pending_bytes(self):
        return self.pod.max_pending_bytes

    # --- picows callbacks ----------------------------------------------------------------------
    cpdef on_ws_connected(self, WSTransport transport):
        self.transport = transport
        # picows 2.3.1 reads them only before this callback (the upgrade, and the client side's
        # factory); kept, they and their headers (the JWT among them) live as long as the socket
        transport.request = None
        transport.response = None
        _shrink_write_buffer(transport)
        self.pod.on_open(self)

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        cdef WSMsgType msg_type = frame.msg_type
        cdef bint rsv = frame.rsv1 or frame.rsv2 or frame.rsv3
        if rsv or not frame.fin or not (
                msg_type == WSMsgType.TEXT or msg_type == WSMsgType.PING
                or msg_type == WSMsgType.PONG or msg_type == WSMsgType.CLOSE):
            self.close(*frame_violation(<int>msg_type, frame.fin, rsv))
        elif msg_type == WSMsgType.TEXT:
            self.pod.on_text(self, frame.get_payload_as_bytes())
        elif msg_type == WSMsgType.PONG:
            self.pod.on_pong(self, frame.get_payload_as_bytes())
        elif msg_type == WSMsgType.PING:
            # RFC 6455 5.5.3: answering only the latest of several pings is allowed
            self.ping_payload = frame.get_payload_as_bytes()
        else:  # CLOSE
            code, reason = close_reply(frame.get_payload_as_bytes())
            if self.close_reason is None:
                self.close_reason = reason
            message = frame.get_close_message() if reason is CLIENT_CLOSE else INVALID_CLOSE_CODE
            transport.send_close(<WSCloseCode><int>code, message)
            transport.disconnect()
            return
        if frame.last_in_buffer and self.ping_payload is not None:
            payload = self.ping_payload
            self.ping_payload = None
            if self.close_reason is None:
                transport.send_pong(payload)
                self.check_pending()

    cpdef on_ws_disconnected(self, WSTransport transport):
        self.pod.cleanup(self)

    # picows warns on every crossing of the write buffer's watermarks unless these exist; the
    # pending-bytes budget (check_pending) is what acts on a client that does not read
    cpdef pause_writing(self):
        pass

    cpdef resume_writing(self):
        pass

    # --- the delivery rule and writes, in C ----------------------------------------------------
    cdef int _offer(self, bytes frame, long long seq) except -1:
        """delivery.offer (push/delivery.py) on the C fields; seq NO_SEQ for none."""
        cdef Py_ssize_t held
        if self.close_reason is not None:
            return SKIP
        if not self.acked:
            held = self.held_bytes + PyBytes_GET_SIZE(frame)
            if held > self.pod.max_pending_bytes:
                self.backlog = None
                self.held_bytes = 0
                return OVERFLOW
            if self.backlog is None:
                self.backlog = []
            (<list>self.backlog).append((None if seq == NO_SEQ else seq, frame))
            self.held_bytes = held
            return HOLD
        if seq != NO_SEQ:
            if seq <= self.sent_seq:
                return SKIP
            self.sent_seq = seq
        return SEND

    def offer(self, bytes frame, seq):
        """delivery.offer's verdict for this connection, by the C rule (tests compare them)."""
        return self._offer(frame, NO_SEQ if seq is None else seq)

    cdef int write_frame(self, bytes ws_frame) except -1:
        """A whole WebSocket frame to the socket, never after a close frame went out.

        picows' own fast path (WSTransport._fast_write in 2.3.1, through its fields): nothing
        queued in the transport -> one send(2) of the frame, and nothing is pending after it;
        otherwise (or for the unsent rest) the transport's `write`, then the pending check."""
        cdef WSTransport transport = self.transport
        cdef Py_ssize_t size, sent
        if transport.is_close_frame_sent or transport.is_disconnected:
            return 0
        if not transport.is_secure and not transport._tr_get_write_buffer_size():
            size = PyBytes_GET_SIZE(ws_frame)
            sent = send(transport._socket, PyBytes_AS_STRING(ws_frame), <size_t>size, 0)
            if sent == size:
                return 0
            if sent > 0:
                ws_frame = ws_frame[sent:]
        transport._tr_write(ws_frame)
        self.check_pending()
        return 0

    # --- used by the pod and the hub -----------------------------------------------------------
    cpdef check_pending(self):
        """After every write: more than WS_MAX_PENDING_BYTES unsent closes it with 1013."""
        if self.transport._tr_get_write_buffer_size() > self.pod.max_pending_bytes:
            self.close(SLOW_CONSUMER)

    cpdef send_frame(self, bytes ws_frame):
        """Write a whole WebSocket frame (`text_frame`), unless a close frame went out."""
        self.write_frame(ws_frame)

    cpdef send(self, bytes payload):
        """Write one text frame with this payload (a JSON message of the wire contract)."""
        self.write_frame(text_frame(payload))

    cpdef bint deliver(self, bytes frame, object seq) except -1:
        """Send a frame by the delivery rules (push/delivery.py): False when held or skipped
        (or held past WS_MAX_PENDING_BYTES: then it is closed 1013)."""
        cdef int verdict = self._offer(frame, NO_SEQ if seq is None else seq)
        if verdict == SEND:
            self.write_frame(text_frame(frame))
            return True
        if verdict == OVERFLOW:
            self.close(SLOW_CONSUMER)
        return False

    cpdef close(self, object close, object message=None, bint abort=False):
        """Server-initiated close; the first reason given is the one logged. Decided now
        (nothing more is delivered to it), carried out by the pod's close scheduler
        (push/close_scheduler.py: a mass close stalls nobody)."""
        if self.close_reason is not None or self.transport is None:
            return
        self.close_reason = close
        self.pod.closes.add(self.close_now, close, message, abort)

    cpdef close_now(self, object close, object message=None, bint abort=False):
        """The close frame and the disconnect (unless the connection is already going)."""
        cdef WSTransport transport = self.transport
        if transport.is_close_frame_sent or transport.is_disconnected:
            return
        transport.send_close(<WSCloseCode><int>close.code, (message or close.reason).encode())
        if abort:
            transport.disconnect(False)
        else:
            # a client that never answers our close is cut off by the wheel
            self.pod.schedule_close_deadline(self)
            transport.disconnect(True)
