# The C layout of the pub/sub reader: augments src/ordertrack/push/pubsub_reader.py (Cython's
# pure-Python mode), compiled by setup.py as ordertrack.push._pubsub_reader.


cdef class ReaderCore:
    # The pod's subscription connection: hiredis parses, this routes (see pubsub_reader.py).
    cdef public dict watched             # the hub's order_id -> watch
    cdef public object on_update         # (order_id, watch, payload)
    cdef public object on_control        # (payload)
    cdef public object on_live           # ()
    cdef public object on_malformed      # (order_id or None, reason)
    cdef public object on_shard          # (b"ssubscribe" or b"sunsubscribe", channel)
    cdef public Py_ssize_t subscriptions # confirmations that make the subscription live
    cdef public bytes hello              # written on connection_made
    cdef public object closed            # future: set to the error (or None) on connection_lost
    cdef public object transport
    cdef public object error
    cdef readonly bint live
    cdef readonly Py_ssize_t confirmed
    cdef readonly unsigned long long replies   # every reply parsed (the watchdog's sign of life)
    cdef readonly unsigned long long received
    cdef readonly unsigned long long discarded
    cdef readonly unsigned long long malformed
    cdef object _reader                  # hiredis.Reader, None once the stream is unusable
    cdef object _gets
    cdef object _feed
    cdef bytearray _buf
    cdef object _view

    cdef int _on_list(self, list reply) except -1
    cdef int _malformed(self, object order_id, str reason) except -1
    cdef int _fail(self, object exc, object reason) except -1
