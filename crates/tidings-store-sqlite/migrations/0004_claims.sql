-- Live claims per webhook, counted at every claim so one webhook never holds more than its share.
CREATE INDEX deliveries_claimed ON deliveries(webhook_id) WHERE claimed_by IS NOT NULL;
