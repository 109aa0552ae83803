-- The whole schema of the SQLite store's three migrations, in PostgreSQL idiom.
--
-- Times are BIGINT Unix milliseconds, as in SQLite. Ids are prefixed UUIDv7 text compared byte by
-- byte (COLLATE "C"), so lists and cursors sort exactly as SQLite's BINARY collation does whatever
-- the database's locale. JSON stays TEXT: an event's data is signed as stored, byte for byte.

CREATE TABLE workspaces (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT NOT NULL,
    level_precedence TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT COLLATE "C" PRIMARY KEY,
    scope TEXT NOT NULL,
    workspace_id TEXT COLLATE "C" REFERENCES workspaces(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    secret_hash BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_keys_by_workspace ON api_keys(workspace_id, id);

CREATE TABLE event_types (
    name TEXT COLLATE "C" PRIMARY KEY,
    description TEXT NOT NULL,
    type_group TEXT NOT NULL,
    schema TEXT,
    example TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Endpoint health (failing_since .. last_failure_reason) is kept by the dispatcher: failing_since is
-- the first failed attempt since the last success; test sends never touch it. The secret being
-- rotated out keeps signing alongside the new one until previous_secret_until.
CREATE TABLE webhooks (
    id TEXT COLLATE "C" PRIMARY KEY,
    workspace_id TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    spec TEXT NOT NULL,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_until BIGINT,
    state TEXT NOT NULL,
    disabled_reason TEXT,
    failing_since BIGINT,
    failures_since_success BIGINT NOT NULL DEFAULT 0,
    last_success_at BIGINT,
    last_failure_at BIGINT,
    last_failure_reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhooks_by_workspace ON webhooks(workspace_id, id);

-- One row per webhook that claims lock (in webhook id order) to count a webhook's live claims and
-- spend its rate tokens, so the concurrency and rate limits hold across every node. The rate is
-- copied from the spec so claims can leave out webhooks with an empty bucket without parsing specs.
-- A bucket last filled at 0 is full on first use.
CREATE TABLE webhook_gates (
    webhook_id TEXT COLLATE "C" PRIMARY KEY REFERENCES webhooks(id) ON DELETE CASCADE,
    rate_per_s BIGINT,
    rate_tokens DOUBLE PRECISION NOT NULL DEFAULT 0,
    rate_updated_at BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE events (
    id TEXT COLLATE "C" PRIMARY KEY,
    workspace_id TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    event_type TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    data TEXT NOT NULL,
    campaign_id TEXT,
    client_id TEXT,
    agent_id TEXT,
    category_id TEXT,
    idempotency_key TEXT
);
CREATE INDEX events_by_workspace ON events(workspace_id, id);
-- Retention finds old events by time.
CREATE INDEX events_by_time ON events(received_at);

-- The primary key is what makes two concurrent publishes with one key store one event.
CREATE TABLE idempotency_keys (
    workspace_id TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    idempotency_key TEXT NOT NULL,
    event_id TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, idempotency_key)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys(expires_at);

-- While a delivery is claimed, next_attempt_at holds the end of the claim: a claim that is never
-- recorded (its node died) makes the delivery due again by itself. A paused or disabled webhook's
-- pending deliveries are held with no due time, outside the due index.
CREATE TABLE deliveries (
    id TEXT COLLATE "C" PRIMARY KEY,
    workspace_id TEXT COLLATE "C" NOT NULL,
    event_id TEXT COLLATE "C" NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    webhook_id TEXT COLLATE "C" NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_type TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    claimed_by TEXT,
    last_status_code BIGINT,
    last_error_kind TEXT,
    is_test BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries(next_attempt_at)
    WHERE status = 'pending' AND next_attempt_at IS NOT NULL;
-- Held deliveries, released when their webhook is active again; with deliveries_due it also
-- answers "how many are pending" from two small indexes.
CREATE INDEX deliveries_held ON deliveries(webhook_id)
    WHERE status = 'pending' AND next_attempt_at IS NULL;
-- Claims in progress per webhook: what a claim counts against the per-webhook concurrency limit.
CREATE INDEX deliveries_claimed ON deliveries(webhook_id) WHERE claimed_by IS NOT NULL;
CREATE INDEX deliveries_by_workspace ON deliveries(workspace_id, id);
CREATE INDEX deliveries_by_event ON deliveries(event_id);
-- Summaries count a webhook's deliveries by status and type from this covering index.
CREATE INDEX deliveries_by_webhook ON deliveries(webhook_id, created_at, status, event_type, is_test);
-- Retention finds finished deliveries by age.
CREATE INDEX deliveries_finished ON deliveries(updated_at) WHERE status != 'pending';
-- Every claim and outcome rewrites a pending delivery, and never in place (its due time is
-- indexed): vacuum more often than the default fifth of the table, so dead entries do not pile up
-- at the front of the due index that every claim scans.
ALTER TABLE deliveries SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.05);

CREATE TABLE attempts (
    delivery_id TEXT COLLATE "C" NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    number BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status_code BIGINT,
    error_kind TEXT,
    error_message TEXT,
    response_excerpt TEXT,
    request_headers TEXT NOT NULL,
    response_headers TEXT NOT NULL,
    PRIMARY KEY (delivery_id, number)
);

-- Attempt latency rolled up per webhook, hour and bucket (bounds in tidings-core::stats).
CREATE TABLE attempt_latency (
    webhook_id TEXT COLLATE "C" NOT NULL,
    hour BIGINT NOT NULL,
    bucket BIGINT NOT NULL,
    attempts BIGINT NOT NULL,
    PRIMARY KEY (webhook_id, hour, bucket)
);
-- Retention drops old hours.
CREATE INDEX attempt_latency_by_hour ON attempt_latency(hour);

-- Operator notifications waiting to be sent (an outbox: written in the same commit as their cause).
CREATE TABLE notifications (
    id TEXT COLLATE "C" PRIMARY KEY,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX notifications_due ON notifications(next_attempt_at);

-- Values the server keeps for itself, shared by every node: the key that signs portal sessions.
CREATE TABLE server_settings (
    name TEXT COLLATE "C" PRIMARY KEY,
    value BYTEA NOT NULL
);
