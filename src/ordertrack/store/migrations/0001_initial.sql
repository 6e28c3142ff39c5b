-- Orders and their tracking history. Timestamps: ISO 8601 UTC text ending in Z, kept as
-- text so what comes out is exactly what went in (the format sorts chronologically).
-- A word in double braces is a type the dialects spell differently (base.py DIALECT_WORDS).
CREATE TABLE orders (
    order_id             TEXT PRIMARY KEY,
    user_id              TEXT NOT NULL,
    carrier              TEXT NOT NULL,
    tracking_number      TEXT NOT NULL,
    status               TEXT NOT NULL DEFAULT 'shipped',
    last_update          TEXT,
    estimated_delivery   TEXT,
    region               TEXT,
    seq                  {{BIGINT}} NOT NULL DEFAULT 0,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    needs_investigation  {{BOOLEAN}} NOT NULL DEFAULT {{FALSE}},
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);

-- the gateway's poll query: active orders of one carrier
CREATE INDEX orders_carrier_status ON orders (carrier, status);
CREATE INDEX orders_user ON orders (user_id);

CREATE TABLE events (
    order_id           TEXT NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    seq                {{BIGINT}} NOT NULL,
    status             TEXT NOT NULL,
    location           TEXT,
    timestamp          TEXT NOT NULL,
    estimated_delivery TEXT,
    raw                {{JSON}},
    created_at         TEXT NOT NULL,
    PRIMARY KEY (order_id, seq)
);

-- an event is the same scan when status, location and timestamp match (no location = '')
CREATE UNIQUE INDEX events_identity
    ON events (order_id, status, COALESCE(location, ''), timestamp);
