"""The push pod: WebSocket connections fed from Redis pub/sub (README "Architecture").

Parts:  server (upgrade decision) -> connection (one socket; THE delivery rule: offer/deliver)
        lifecycle (open, text, pong, cleanup) · heartbeat (timer wheel: ping, pong, exp, close)
        admission (register, ack, replay in batches) · hub (the index: id -> conn, order -> Watch)
        fanout (decode once, one frame for all) · broker + pubsub_reader (the ONE subscription)
        registry (per-user Redis slots) · catch_up, flag_watch · pod (composes, starts, drains)
A message: PSUBSCRIBE -> pubsub_reader (unwatched orders dropped before any decode) ->
        fanout.publish (message rule, frame built once, latency histogram) -> Connection.deliver
        per watcher: send, hold until the ack, skip a seq the client has, or close 1013.
A connection: upgrade -> Connection -> lifecycle.on_open (hub, first ping, admission queue) ->
        admission (connection_ack, replay, held updates released) -> live updates from the hub
        -> lifecycle.cleanup exactly once (hub, wheel, registry slot, log line, metrics).
"""
