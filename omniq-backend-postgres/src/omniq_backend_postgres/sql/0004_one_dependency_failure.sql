-- A task cancelled because its parent did not succeed stores the error every backend
-- stores (omniq.lifecycle.dependency_failure): type DependencyFailedError of module
-- omniq.errors, "parent task '<id>' ended <state>", naming its direct parent.
CREATE OR REPLACE FUNCTION {s}.settle(p_ids text[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_now float8 := extract(epoch FROM now());
BEGIN
    WITH RECURSIVE doomed(id, parent, parent_state) AS (
        SELECT d.child_id, d.parent_id, p.state
        FROM {s}.dependencies d JOIN {s}.tasks p ON p.id = d.parent_id
        WHERE d.parent_id = ANY (p_ids) AND p.state IN ('failed', 'dead', 'cancelled', 'expired')
        UNION
        SELECT d.child_id, d.parent_id, 'cancelled'::text
        FROM {s}.dependencies d JOIN doomed ON d.parent_id = doomed.id
    )
    UPDATE {s}.tasks c
    SET state = 'cancelled', finished_at = v_now,
        error = jsonb_build_object(
            'type', 'DependencyFailedError', 'module', 'omniq.errors',
            'message', format('parent task ''%s'' ended %s', x.parent, x.parent_state))
    FROM (SELECT DISTINCT ON (id) id, parent, parent_state FROM doomed ORDER BY id, parent) x
    WHERE c.id = x.id AND c.state = 'waiting';

    UPDATE {s}.tasks c
    SET state = CASE WHEN c.eta > v_now THEN 'scheduled' ELSE 'pending' END
    WHERE c.state = 'waiting'
      AND c.id IN (SELECT d.child_id FROM {s}.dependencies d JOIN {s}.tasks p ON p.id = d.parent_id
                   WHERE d.parent_id = ANY (p_ids) AND p.state = 'succeeded')
      AND NOT EXISTS (SELECT 1 FROM {s}.dependencies d JOIN {s}.tasks p ON p.id = d.parent_id
                      WHERE d.child_id = c.id AND p.state <> 'succeeded');
END $$;
