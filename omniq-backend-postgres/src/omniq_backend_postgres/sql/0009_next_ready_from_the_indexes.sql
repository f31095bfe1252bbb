-- How long until a queue has work (wait_for_work), answered from two short index walks
-- instead of an aggregate over every ready row: with 100,000 tasks queued, or after they
-- ran and left as many dead index entries behind on a table nothing vacuumed, min(eta)
-- over the ready states read them all (a bitmap scan, which never marks dead entries)
-- on every idle poll of every worker. Index scans in order stop at the first live row
-- and mark the dead entries they pass, so the next walk skips them.
--
-- tasks_eta indexed every ready task, though only scheduled and retrying ones wait for
-- an eta: pending tasks (most of them) now cost one index entry less to enqueue.
DROP INDEX IF EXISTS {s}.tasks_eta;
CREATE INDEX tasks_due ON {s}.tasks (queue, eta) WHERE state IN ('scheduled', 'retrying');

-- 0 when a task of p_queues is ready now, else the seconds until the earliest eta of a
-- scheduled or retrying one, NULL when they have none.
CREATE FUNCTION {s}.next_ready(p_queues text[]) RETURNS float8 LANGUAGE plpgsql STABLE
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off SET jit = off AS $$
DECLARE
    v_now float8 := extract(epoch FROM now());
    v_next float8;
BEGIN
    IF EXISTS (
        SELECT 1 FROM unnest(p_queues) AS q(name),
        LATERAL (SELECT 1 FROM {s}.tasks t
                 WHERE t.queue = q.name AND t.state IN ('pending', 'scheduled', 'retrying')
                   AND (t.eta IS NULL OR t.eta <= v_now)
                   AND (t.expires_at IS NULL OR t.expires_at > v_now)
                 LIMIT 1) r
    ) THEN
        RETURN 0;
    END IF;
    SELECT min(d.eta) INTO v_next FROM unnest(p_queues) AS q(name),
    LATERAL (SELECT t.eta FROM {s}.tasks t
             WHERE t.queue = q.name AND t.state IN ('scheduled', 'retrying') AND t.eta > v_now
               AND (t.expires_at IS NULL OR t.expires_at > v_now)
             ORDER BY t.eta LIMIT 1) d;
    RETURN v_next - v_now;
END $$;
