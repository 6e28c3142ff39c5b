-- A pushed scan names only its carrier and tracking number (`find_order`): without this
-- index every webhook delivery scanned the orders table. created_at and order_id follow so
-- the newest order of a reused number is the index's first entry (no sort).
CREATE INDEX orders_tracking_number
    ON orders (carrier, tracking_number, created_at DESC, order_id DESC);
