-- Reserve walks the ready index (queue, priority DESC, seq) in order and stops after
-- p_limit live rows, whatever the statistics say. Planned generically from statistics
-- of a table that was never analyzed (autovacuum off, or not yet run on a freshly filled
-- table) the statement estimated 4 ready rows and chose a bitmap scan that fetched EVERY
-- ready row and sorted them for each batch: 350 ms a reserve with 100,000 tasks queued,
-- falling as the queue drained. The function's settings leave the ordered index scan as
-- the only plan without a sort; jit stays off because the disabled plans' penalty costs
-- would otherwise look expensive enough to compile.
--
-- One queue or several: each queue's index range yields its first p_limit ready rows
-- (locked, SKIP LOCKED), and the best p_limit of those are leased. With several queues
-- the candidates not leased stay locked until the statement's transaction ends
-- (milliseconds), so another worker skips them meanwhile.
CREATE FUNCTION {s}.reserve(p_queues text[], p_limit integer, p_owner text, p_lease float8)
RETURNS TABLE (priority smallint, seq bigint, data bytea, state text, created_at float8,
               eta float8, attempts integer, lease_owner text, lease_token text,
               lease_deadline float8, started_at float8, finished_at float8, error jsonb)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off SET jit = off AS $$
#variable_conflict use_column
DECLARE
    v_now float8 := extract(epoch FROM now());
BEGIN
    RETURN QUERY
    WITH picked AS (
        SELECT c.id FROM unnest(p_queues) AS q(name),
        LATERAL (
            SELECT t.id, t.priority, t.seq FROM {s}.tasks t
            WHERE t.queue = q.name AND t.state IN ('pending', 'scheduled', 'retrying')
              AND (t.eta IS NULL OR t.eta <= v_now)
              AND (t.expires_at IS NULL OR t.expires_at > v_now)
            ORDER BY t.priority DESC, t.seq
            LIMIT p_limit
            FOR UPDATE OF t SKIP LOCKED
        ) c
        ORDER BY c.priority DESC, c.seq
        LIMIT p_limit
    ),
    leased AS (
        UPDATE {s}.tasks t
        SET state = 'running', attempts = t.attempts + 1, lease_owner = p_owner,
            lease_token = gen_random_uuid()::text, lease_deadline = v_now + p_lease,
            started_at = v_now
        WHERE t.id = ANY (ARRAY(SELECT id FROM picked))
        RETURNING t.priority, t.seq, t.data, t.state, t.created_at, t.eta, t.attempts,
                  t.lease_owner, t.lease_token, t.lease_deadline, t.started_at,
                  t.finished_at, t.error
    )
    SELECT * FROM leased l ORDER BY l.priority DESC, l.seq;
END $$;
