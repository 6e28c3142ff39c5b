// nchan peer: the two things nginx cannot do by configuration alone.

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

export default {subprotocol, discard};
