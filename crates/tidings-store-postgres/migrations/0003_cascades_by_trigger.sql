-- Rows that are only ever inserted beside what they reference keep that reference without a
-- foreign key: a delivery is inserted by the statement that inserts its event, joining its webhook
-- under a key-share lock (a webhook deleted first gives no delivery; one deleted after waits for
-- the commit, and its deletion then removes the delivery); an attempt is inserted by the
-- transaction that has just updated its delivery. Checking such a key took a trigger, a query
-- and a row lock (a WAL record) per inserted row: with the three below dropped, the bench's
-- end-to-end row on PostgreSQL went from 3,411, 3,231 and 3,324 to 3,928, 3,744 and 4,136
-- deliveries/s (runs alternating with the binary before). What the keys' ON DELETE CASCADE did is done by the triggers below, once per
-- deleting statement.
ALTER TABLE attempts DROP CONSTRAINT attempts_delivery_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_event_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_webhook_id_fkey;

-- Deletes the rows of TG_ARGV[0] whose column TG_ARGV[1] names a row the statement deleted.
CREATE FUNCTION tidings_delete_dependents() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DELETE FROM %I d USING gone WHERE d.%I = gone.id', TG_ARGV[0], TG_ARGV[1]);
    RETURN NULL;
END $$;
CREATE TRIGGER deliveries_take_their_attempts AFTER DELETE ON deliveries
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION tidings_delete_dependents('attempts', 'delivery_id');
CREATE TRIGGER events_take_their_deliveries AFTER DELETE ON events
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION tidings_delete_dependents('deliveries', 'event_id');
CREATE TRIGGER webhooks_take_their_deliveries AFTER DELETE ON webhooks
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION tidings_delete_dependents('deliveries', 'webhook_id');
