-- OmniQ PostgreSQL schema, version 1. "{s}" is replaced by the quoted schema name.
-- Times are float8 UTC epoch seconds (what OmniQ's models carry); the event_log view
-- shows them as timestamptz for people reading events in SQL.

-- Tasks ---------------------------------------------------------------------------------

CREATE TABLE {s}.tasks (
    id             text PRIMARY KEY,
    seq            bigint GENERATED ALWAYS AS IDENTITY,  -- enqueue order (FIFO)
    queue          text NOT NULL,
    name           text NOT NULL,
    priority       smallint NOT NULL DEFAULT 0,
    state          text NOT NULL,
    eta            float8,
    expires_at     float8,
    created_at     float8 NOT NULL,
    attempts       integer NOT NULL DEFAULT 0,
    max_attempts   integer NOT NULL,  -- max(max_deliveries, max_retries + 1)
    lease_owner    text,
    lease_token    text,
    lease_deadline float8,
    started_at     float8,
    finished_at    float8,
    result_ttl     float8 NOT NULL,
    dead_ttl       float8 NOT NULL,
    schedule_id    text,
    error          jsonb,
    data           bytea NOT NULL  -- msgpack of the task as enqueued; columns above win
);
COMMENT ON TABLE {s}.tasks IS
    'OmniQ tasks. Times are UTC epoch seconds; data is the msgpack task as enqueued.';

CREATE INDEX tasks_ready ON {s}.tasks (queue, priority DESC, seq)
    WHERE state IN ('pending', 'scheduled', 'retrying');
CREATE INDEX tasks_eta ON {s}.tasks (eta)
    WHERE state IN ('pending', 'scheduled', 'retrying');
CREATE INDEX tasks_leases ON {s}.tasks (lease_deadline) WHERE state = 'running';
CREATE INDEX tasks_expiry ON {s}.tasks (expires_at)
    WHERE expires_at IS NOT NULL AND state IN ('pending', 'scheduled', 'retrying', 'waiting');
CREATE INDEX tasks_finished ON {s}.tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX tasks_queue_state ON {s}.tasks (queue, state, seq);

CREATE TABLE {s}.dependencies (
    parent_id text NOT NULL REFERENCES {s}.tasks (id) ON DELETE CASCADE,
    child_id  text NOT NULL REFERENCES {s}.tasks (id) ON DELETE CASCADE,
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX dependencies_child ON {s}.dependencies (child_id);
COMMENT ON TABLE {s}.dependencies IS 'parent -> child edges of depends_on.';

-- Settle the dependents of tasks that just finished, in the caller's transaction.
-- Runs as its own statements (plpgsql takes a fresh snapshot per statement), so a child
-- enqueued while its parent was being finished is seen: the child's enqueue holds FOR
-- SHARE on the parent, so the parent's UPDATE waited for the child's commit.
CREATE FUNCTION {s}.settle(p_ids text[]) RETURNS void LANGUAGE plpgsql AS $$
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
        error = jsonb_build_object('type', 'DependencyError', 'module', 'omniq.errors',
                                   'message', format('dependency %s ended %s', x.parent, x.parent_state))
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

-- complete_many in one round trip: finish the leased tasks, then settle their dependents.
CREATE FUNCTION {s}.complete_many(p_ids text[], p_tokens text[], p_states text[], p_errors jsonb[])
RETURNS SETOF text LANGUAGE plpgsql AS $$
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

-- Wake workers (LISTEN omniq_<schema>_tasks) when tasks of a queue become ready.
CREATE FUNCTION {s}.notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('omniq_' || TG_TABLE_SCHEMA || '_tasks', q.queue)
    FROM (SELECT DISTINCT queue FROM inserted
          WHERE state = 'pending' OR (state IN ('scheduled', 'retrying')
                                      AND eta <= extract(epoch FROM now()))) q;
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_notify_insert AFTER INSERT ON {s}.tasks
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION {s}.notify_inserted();

CREATE FUNCTION {s}.notify_ready() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('omniq_' || TG_TABLE_SCHEMA || '_tasks', NEW.queue);
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_notify_update AFTER UPDATE OF state ON {s}.tasks FOR EACH ROW
    WHEN (NEW.state IN ('pending', 'scheduled', 'retrying') AND OLD.state IS DISTINCT FROM NEW.state
          AND (NEW.eta IS NULL OR NEW.eta <= extract(epoch FROM now())))
    EXECUTE FUNCTION {s}.notify_ready();

-- Schedules -----------------------------------------------------------------------------

CREATE TABLE {s}.schedules (
    id       text PRIMARY KEY,
    next_run float8 NOT NULL,
    last_run float8,
    paused   boolean NOT NULL DEFAULT false,
    data     bytea NOT NULL  -- msgpack of the schedule; the columns above win
);
CREATE INDEX schedules_due ON {s}.schedules (next_run) WHERE NOT paused;

-- Results -------------------------------------------------------------------------------

CREATE TABLE {s}.results (
    task_id     text PRIMARY KEY,
    state       text NOT NULL,
    finished_at float8,
    expires_at  float8,
    data        bytea NOT NULL  -- msgpack of the TaskResult
);
CREATE INDEX results_expiry ON {s}.results (expires_at) WHERE expires_at IS NOT NULL;
COMMENT ON TABLE {s}.results IS 'OmniQ task results (one per task id; expires_at in epoch seconds).';

-- Wake wait() (LISTEN omniq_<schema>_results) when a result is written.
CREATE FUNCTION {s}.notify_result() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('omniq_' || TG_TABLE_SCHEMA || '_results', NEW.task_id);
    RETURN NULL;
END $$;
CREATE TRIGGER results_notify AFTER INSERT OR UPDATE ON {s}.results FOR EACH ROW
    EXECUTE FUNCTION {s}.notify_result();

-- Events --------------------------------------------------------------------------------

CREATE TABLE {s}.events (
    seq       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- append order
    id        text NOT NULL,
    task_id   text NOT NULL,
    queue     text NOT NULL,
    type      text NOT NULL,
    ts        float8 NOT NULL,
    worker_id text,
    detail    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX events_ts ON {s}.events (ts);
CREATE INDEX events_task ON {s}.events (task_id, ts);
CREATE INDEX events_queue ON {s}.events (queue, ts);
CREATE INDEX events_type ON {s}.events (type, ts);
COMMENT ON TABLE {s}.events IS
    'OmniQ task events, append-only. ts is UTC epoch seconds; read the event_log view for timestamptz.';
COMMENT ON COLUMN {s}.events.type IS
    'enqueued, started, succeeded, failed, retrying, cancelled, expired, dead, lease_lost, released, scheduled';

CREATE VIEW {s}.event_log AS
SELECT e.seq, e.id, e.task_id, coalesce(e.detail ->> 'name', t.name) AS task_name, e.queue, e.type,
       to_timestamp(e.ts) AS occurred_at, e.worker_id,
       CASE WHEN jsonb_typeof(e.detail -> 'duration') = 'number'
            THEN (e.detail ->> 'duration')::float8 END AS duration,
       e.detail
FROM {s}.events e LEFT JOIN {s}.tasks t ON t.id = e.task_id;
COMMENT ON VIEW {s}.event_log IS
    'OmniQ events with occurred_at as timestamptz, the task name and the run duration in seconds '
    '(succeeded and failed events).';
