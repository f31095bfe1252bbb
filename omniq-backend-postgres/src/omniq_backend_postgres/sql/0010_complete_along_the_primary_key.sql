-- complete_many probes the primary key once per id of its batch. 0002 turned hash and
-- merge joins off, but the planner still had a nested loop of its own choice: estimating
-- few running tasks (statistics taken while none ran), it walked the whole tasks_leases
-- index, every running task of every worker, and for each one rescanned the batch's
-- unnest: running tasks x batch size comparisons per call (2,500 for one worker with 50
-- held; 0.5 of the 1.1 ms that a batch of 50 took). The state test below reads 'running'
-- from an InitPlan, so the planner cannot prove the tasks_leases predicate and the only
-- index path left is the primary key, probed from each row of the batch (0.55 ms).
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
        WHERE t.id = i.id AND t.lease_token = i.token AND t.state = (SELECT 'running'::text)
        RETURNING t.id
    )
    SELECT coalesce(array_agg(id), '{}') INTO v_done FROM finished;
    IF EXISTS (SELECT 1 FROM {s}.dependencies WHERE parent_id = ANY (v_done)) THEN
        PERFORM {s}.settle(v_done);
    END IF;
    RETURN QUERY SELECT unnest(v_done);
END $$;
