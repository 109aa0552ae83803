-- The live claims every claim counts under its webhooks' gates: claimed pending rows only, by
-- lease end. deliveries_claimed (by webhook) was not used: on statistics that lag a table growing
-- by thousands of rows a second, the planner chose deliveries_by_webhook and read the webhook's
-- whole backlog on every claim (~8 ms at 30k pending), so the count now reads all live claims
-- from this index (at most what the nodes hold in memory) and picks the webhooks after.
DROP INDEX deliveries_claimed;
CREATE INDEX deliveries_live ON deliveries(next_attempt_at)
    WHERE claimed_by IS NOT NULL AND status = 'pending';
