-- Every event costs one entry in each index of the events table, and a worker writes two
-- events per task: the (queue, ts) and (type, ts) indexes were four of the eighteen
-- index entries a task cost to run. The queries events serve are bounded in time (the
-- ts index) or by task (the (task_id, ts) index); a filter on queue or type reads the
-- time range's rows. Add them back with CREATE INDEX when you filter a long history by
-- a rare queue or type (docs/backends/postgres.md).
DROP INDEX IF EXISTS {s}.events_queue;
DROP INDEX IF EXISTS {s}.events_type;

-- The view gains ts (epoch seconds): a filter on occurred_at (to_timestamp(ts)) cannot use
-- the ts index, a filter on ts can.
CREATE OR REPLACE VIEW {s}.event_log AS
SELECT e.seq, e.id, e.task_id, coalesce(e.detail ->> 'name', t.name) AS task_name, e.queue, e.type,
       to_timestamp(e.ts) AS occurred_at, e.worker_id,
       CASE WHEN jsonb_typeof(e.detail -> 'duration') = 'number'
            THEN (e.detail ->> 'duration')::float8 END AS duration,
       e.detail, e.ts
FROM {s}.events e LEFT JOIN {s}.tasks t ON t.id = e.task_id;
