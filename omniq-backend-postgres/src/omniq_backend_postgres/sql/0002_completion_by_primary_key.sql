-- complete_many joins its batch to the tasks through the primary key, whatever the
-- statistics say. Planned from statistics taken while few tasks ran (or with autovacuum
-- off), the join scanned every entry of tasks_leases, dead ones included, so each batch
-- cost grew with the number of tasks ever run; the nested loop costs one index probe per id.
CREATE OR REPLACE FUNCTION {s}.complete_many(p_ids text[], p_tokens text[], p_states text[], p_errors jsonb[])
RETURNS SETOF text LANGUAGE plpgsql
SET enable_hashjoin = off SET enable_mergejoin = off AS $$
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
        WHERE t.id = i.id AND t.lease_token = i.token AND t.state = 'running'
        RETURNING t.id
    )
    SELECT coalesce(array_agg(id), '{}') INTO v_done FROM finished;
    IF EXISTS (SELECT 1 FROM {s}.dependencies WHERE parent_id = ANY (v_done)) THEN
        PERFORM {s}.settle(v_done);
    END IF;
    RETURN QUERY SELECT unnest(v_done);
END $$;

-- One trigger call per statement instead of one per result row (a worker writes its
-- results in batches). A transition table can serve one event only, hence two triggers.
CREATE FUNCTION {s}.notify_results() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('omniq_' || TG_TABLE_SCHEMA || '_results', w.task_id) FROM written w;
    RETURN NULL;
END $$;
DROP TRIGGER results_notify ON {s}.results;
DROP FUNCTION {s}.notify_result();
CREATE TRIGGER results_notify_insert AFTER INSERT ON {s}.results
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION {s}.notify_results();
CREATE TRIGGER results_notify_update AFTER UPDATE ON {s}.results
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION {s}.notify_results();
