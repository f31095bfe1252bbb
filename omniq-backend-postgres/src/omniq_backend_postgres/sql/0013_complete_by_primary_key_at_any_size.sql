-- complete_many must reach its tasks through the primary key whatever the statistics. The
-- pool plans generically once per connection and keeps the plan until the next VACUUM or
-- ANALYZE. Migration 10's InitPlan hid the tasks_leases predicate but left the state test
-- an index condition: planned over a table of a few hundred tasks, the join read
-- tasks_queue_state for the running tasks, materialized them and compared each id of the
-- batch with them (4,950 rows filtered for a batch of 100), and kept that plan as the
-- table grew (100,000 running: 10 million rows filtered, 2.5 s). With the state test
-- kept out of the index, a table of a few dozen tasks still got the whole primary key
-- read in order (as for a merge join) and materialized. Here neither is possible: wrapped in IS TRUE the state test is no index condition
-- (nor a proof of a partial index's predicate), and the ids are matched by = ANY (ARRAY[id])
-- rather than =, which the index takes from each row of the batch but which makes no
-- ordering worth a full scan. The only path to the tasks left is one primary-key probe per
-- id (sequential scans, hash and merge joins stay off). Same rows, same fencing: a task
-- no longer running, or held under another token, is not completed.
CREATE OR REPLACE FUNCTION {s}.complete_many(p_ids text[], p_tokens text[], p_states text[], p_errors jsonb[])
RETURNS SETOF text LANGUAGE plpgsql
SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off
SET enable_bitmapscan = off AS $$
DECLARE
    v_now float8 := extract(epoch FROM now());
    v_done text[];
BEGIN
    WITH finished AS (
        UPDATE {s}.tasks t
        SET state = i.state, finished_at = v_now,
            error = CASE WHEN i.error IS NOT NULL THEN i.error
                         WHEN i.state = 'succeeded' THEN NULL ELSE t.error END,
            lease_owner = NULL, lease_token = NULL, lease_deadline = NULL
        FROM unnest(p_ids, p_tokens, p_states, p_errors) AS i(id, token, state, error)
        WHERE t.id = ANY (ARRAY[i.id]) AND t.lease_token = i.token
            AND (t.state = (SELECT 'running'::text)) IS TRUE
        RETURNING t.id
    )
    SELECT coalesce(array_agg(id), '{}') INTO v_done FROM finished;
    IF EXISTS (SELECT 1 FROM {s}.dependencies WHERE parent_id = ANY (v_done)) THEN
        PERFORM {s}.settle(v_done);
    END IF;
    RETURN QUERY SELECT unnest(v_done);
END $$;
