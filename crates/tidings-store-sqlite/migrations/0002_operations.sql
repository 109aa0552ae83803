-- Delivery operations: test sends, secret rotation, endpoint health, summaries, operator notifications.

ALTER TABLE deliveries ADD COLUMN is_test INTEGER NOT NULL DEFAULT 0;

-- The secret being rotated out keeps signing alongside the new one until previous_secret_until.
ALTER TABLE webhooks ADD COLUMN previous_secret TEXT;
ALTER TABLE webhooks ADD COLUMN previous_secret_until INTEGER;

-- Endpoint health, kept by the dispatcher: failing_since is the first failed attempt since the last
-- success; test sends never touch it.
ALTER TABLE webhooks ADD COLUMN failing_since INTEGER;
ALTER TABLE webhooks ADD COLUMN failures_since_success INTEGER NOT NULL DEFAULT 0;
ALTER TABLE webhooks ADD COLUMN last_success_at INTEGER;
ALTER TABLE webhooks ADD COLUMN last_failure_at INTEGER;
ALTER TABLE webhooks ADD COLUMN last_failure_reason TEXT;

-- Summaries count a webhook's deliveries by status and type from this covering index.
DROP INDEX deliveries_by_webhook;
CREATE INDEX deliveries_by_webhook ON deliveries(webhook_id, created_at, status, event_type, is_test);
CREATE INDEX deliveries_finished ON deliveries(updated_at) WHERE status != 'pending';

-- Retention finds old events and expired idempotency keys by time.
CREATE INDEX events_by_time ON events(received_at);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys(expires_at);

-- Attempt latency rolled up per webhook, hour and bucket (bounds in tidings-core::stats).
CREATE TABLE attempt_latency (
    webhook_id TEXT NOT NULL,
    hour INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    PRIMARY KEY (webhook_id, hour, bucket)
) WITHOUT ROWID;

-- Operator notifications waiting to be sent (an outbox: written in the same commit as their cause).
CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX notifications_due ON notifications(next_attempt_at);
