// nchan peer: turns the Redis-message JSON POSTed to /pub/{order_id} into our client frame
// (`tracking_update`, customer fields only: raw_carrier_response and published_at dropped).
// Called by nchan_publisher_upstream_request through a proxy_pass to this server; a 200 makes
// nchan publish this body instead of the one it received.
var FIELDS = ['status', 'location', 'timestamp', 'estimated_delivery', 'carrier', 'seq'];

function update(r) {
    var message;
    try {
        message = JSON.parse(r.requestText);
    } catch (e) {
        r.headersOut['Content-Type'] = 'application/json; charset=utf-8';
        r.return(400, JSON.stringify({error: 'INVALID_JSON', message: 'the body must be a JSON object'}));
        return;
    }
    var data = {};
    FIELDS.forEach(function (field) {
        data[field] = message[field] === undefined ? null : message[field];
    });
    r.headersOut['Content-Type'] = 'application/json; charset=utf-8';
    r.return(200, JSON.stringify({event: 'tracking_update', data: data}));
}

// nchan answers a subprotocol it does not know with an EMPTY Sec-WebSocket-Protocol header
// (clients reject that); this header filter replaces it with ours on the 101.
function subprotocol(r) {
    if (r.status === 101) {
        r.headersOut['Sec-WebSocket-Protocol'] = 'vantage-tracking-v1';
    }
}

// Frames a client sends on its WebSocket (other than the heartbeat, which nchan answers
// itself) must not be published to the order's other watchers: 204 makes nchan drop them.
function discard(r) {
    r.return(204);
}

export default {update, subprotocol, discard};
