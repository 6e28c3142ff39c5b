"""What both pub/sub readers (push/pubsub_reader.py and its Cython build) share: the read and
feed sizes and the line a failed handler logs. Its own module, below both, so the compiled
reader never imports the twin module that imports it (no import cycle)."""

#: one read's buffer: a burst of ~100K msg/s is drained in reads of this size
READ_BUFFER_BYTES = 1 << 20
#: a read is fed to hiredis in slices of this size: hiredis moves its unparsed rest down after
#: every 1 KB it consumes, so one 1 MB feed costs ~3.5 us per message and 16 KB slices ~0.3 us
FEED_BYTES = 16 << 10
HANDLER_FAILED = "handling a message on order %s failed; dropped it"
#: the readers' logger
LOGGER = "ordertrack.push.pubsub_reader"
