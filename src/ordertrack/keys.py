"""Redis key and channel names, in one place. Namespaces: `order:tracking:*` and `ws:*`.

- `order:tracking:{order_id}`: the pub/sub channel; message JSON `status, location, timestamp,
  estimated_delivery, carrier, raw_carrier_response, seq, published_at`.
- `order:tracking:state:{order_id}`: hash of the order's current state (`status, location,
  timestamp, estimated_delivery, carrier, seq`).
- `order:tracking:stream:{order_id}`: stream of the order's recent messages; entry ID is
  `{seq}-0` (so `XRANGE key {last_seq + 1}-0 +` is "everything after last_seq") and the field
  `msg` holds the published JSON.
The gateway writes all three in one Lua call, so they never disagree.
"""

CHANNEL_PREFIX = "order:tracking:"
CHANNEL_PATTERN = "order:tracking:*"
STATE_PREFIX = "order:tracking:state:"
STREAM_PREFIX = "order:tracking:stream:"


def channel(order_id: str) -> str:
    return CHANNEL_PREFIX + order_id


def state(order_id: str) -> str:
    return STATE_PREFIX + order_id


def stream(order_id: str) -> str:
    return STREAM_PREFIX + order_id
