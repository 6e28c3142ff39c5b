"""The push pod: WebSocket connections fed from Redis pub/sub (README "Architecture").

Parts:  server (upgrade decision) -> connection (one socket; THE delivery rule: offer/deliver)
        admission (register, ack, replay in batches) · hub (order_id -> Watch) · fanout (decode
        once, one frame for all) · broker + pubsub_reader (the ONE subscription) · registry
        (per-user Redis slots) · timer_wheel (every ping/pong/close deadline) · pod (composes)
A message: Redis PSUBSCRIBE -> pubsub_reader (unwatched orders dropped before any decode) ->
        fanout.publish (message rule, frame built once, latency histogram) -> Connection.deliver
        per watcher: send, hold until the ack, skip a seq the client has, or close 1013.
A connection: upgrade -> Connection -> pod.on_open (hub, wheel, admission queue) -> admission
        (connection_ack, replay, held updates released) -> live updates -> pod.cleanup once.
"""
