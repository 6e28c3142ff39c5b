-- One scan is one event, whatever detail each copy carries (models.scan_identity): its
-- status at its time, the location left out ("Brooklyn NY" and "Brooklyn NY, US" are one
-- scan). Copies stored before this rule are dropped, keeping the first one stored (the one
-- clients were sent first); seq stays strictly increasing, with a gap where a copy was.
DELETE FROM events
WHERE EXISTS (
    SELECT 1 FROM events AS kept
    WHERE kept.order_id = events.order_id
      AND kept.status = events.status
      AND kept.timestamp = events.timestamp
      AND kept.seq < events.seq
);

DROP INDEX events_identity;

CREATE UNIQUE INDEX events_scan ON events (order_id, status, timestamp);
