-- A heartbeat renews its leases through the primary key whatever the statistics. As a
-- plain statement it was planned once per connection (generic plan) and kept until the
-- next VACUUM or ANALYZE: planned over a table of a few hundred tasks it scanned the
-- whole table and hashed the batch, and kept doing so as the table grew, at every
-- heartbeat of every worker. As in complete_many (migration 13): the state test wrapped
-- in IS TRUE is no index condition, the ids are matched by = ANY (ARRAY[id]), and with
-- sequential scans, hash and merge joins off the only path left is one primary-key probe
-- per lease. Same rows: a lease held under another token, or of a task no longer
-- running, is not renewed.
CREATE OR REPLACE FUNCTION {s}.heartbeat_many(p_ids text[], p_tokens text[], p_lease float8)
RETURNS SETOF text LANGUAGE sql
SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off
SET enable_bitmapscan = off AS $$
    UPDATE {s}.tasks t SET lease_deadline = extract(epoch FROM now())::float8 + p_lease
    FROM unnest(p_ids, p_tokens) AS l(id, token)
    WHERE t.id = ANY (ARRAY[l.id]) AND t.lease_token = l.token
        AND (t.state = (SELECT 'running'::text)) IS TRUE
    RETURNING t.id
$$;
