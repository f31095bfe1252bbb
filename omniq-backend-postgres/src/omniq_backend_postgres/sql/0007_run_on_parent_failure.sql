-- Fan-in: a dependent enqueued with on_parent_failure = "run" is never cancelled by a
-- parent that did not succeed; it becomes ready once every parent ended, however
-- (omniq.lifecycle.initial_state). Its edges carry the flag, so settle() reads it
-- where it already walks: the cascade of a failure stops at such a child, and the
-- child is released once none of its parents is still active.
ALTER TABLE {s}.dependencies ADD COLUMN run_on_failure boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN {s}.dependencies.run_on_failure IS
    'the child runs once every parent ended (on_parent_failure = run), never cancelled by one';

CREATE OR REPLACE FUNCTION {s}.settle(p_ids text[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now float8 := extract(epoch FROM now());
    v_ended text[];
BEGIN
    WITH RECURSIVE doomed(id, parent, parent_state) AS (
        SELECT d.child_id, d.parent_id, p.state
        FROM {s}.dependencies d JOIN {s}.tasks p ON p.id = d.parent_id
        WHERE d.parent_id = ANY (p_ids) AND p.state IN ('failed', 'dead', 'cancelled', 'expired')
          AND NOT d.run_on_failure
        UNION
        SELECT d.child_id, d.parent_id, 'cancelled'::text
        FROM {s}.dependencies d JOIN doomed ON d.parent_id = doomed.id
        WHERE NOT d.run_on_failure
    ), cancelled AS (
        UPDATE {s}.tasks c
        SET state = 'cancelled', finished_at = v_now,
            error = jsonb_build_object(
                'type', 'DependencyFailedError', 'module', 'omniq.errors',
                'message', format('parent task ''%s'' ended %s', x.parent, x.parent_state))
        FROM (SELECT DISTINCT ON (id) id, parent, parent_state FROM doomed ORDER BY id, parent) x
        WHERE c.id = x.id AND c.state = 'waiting'
        RETURNING c.id
    )
    SELECT p_ids || coalesce(array_agg(id), '{}') INTO v_ended FROM cancelled;

    UPDATE {s}.tasks c
    SET state = CASE WHEN c.eta > v_now THEN 'scheduled' ELSE 'pending' END
    WHERE c.state = 'waiting'
      AND c.id IN (SELECT d.child_id FROM {s}.dependencies d JOIN {s}.tasks p ON p.id = d.parent_id
                   WHERE d.parent_id = ANY (v_ended)
                     AND (p.state = 'succeeded' OR d.run_on_failure))
      AND NOT EXISTS (SELECT 1 FROM {s}.dependencies d JOIN {s}.tasks p ON p.id = d.parent_id
                      WHERE d.child_id = c.id AND p.state <> 'succeeded'
                        AND (NOT d.run_on_failure
                             OR p.state NOT IN ('failed', 'dead', 'cancelled', 'expired')));
END $$;
