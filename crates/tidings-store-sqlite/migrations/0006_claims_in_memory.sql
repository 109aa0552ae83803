-- Claims are held in memory by the one process that owns the file (see claims.rs): claims written by
-- an earlier version are given back, due at once, and their column and index go.
UPDATE deliveries SET claimed_by = NULL,
    next_attempt_at = MIN(next_attempt_at, CAST(unixepoch('subsec') * 1000 AS INTEGER))
WHERE claimed_by IS NOT NULL AND status = 'pending';
DROP INDEX deliveries_claimed;
ALTER TABLE deliveries DROP COLUMN claimed_by;
