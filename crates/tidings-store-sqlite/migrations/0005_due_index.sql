-- The due index carries the webhook, so a claim that leaves out full lanes filters their backlog
-- from the index alone instead of reading each delivery row.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries(next_attempt_at, webhook_id) WHERE status = 'pending';
