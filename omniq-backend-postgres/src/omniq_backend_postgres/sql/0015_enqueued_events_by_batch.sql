-- A bulk enqueue's COPY writes the `enqueued` events of a batch (same queue, type, time,
-- worker and detail; each its own event id and task id) as ONE events row: a heap row
-- and three index entries per event were about 40% of the server's time of a bulk
-- enqueue (benchmarks/bulk_cpu.py, events on and off). Such a row has
--   batch_ids       the events' ids, space-separated, in order
--   batch_task_ids  their tasks' ids, space-separated, in the same order
--   batch_size      how many events it holds
--   batch_task_min, batch_task_max  the least and greatest of the task ids (byte order)
-- and task_id '' (no task has that id) with id the first event's, so the (task_id, ts)
-- index finds batch rows by time. Every reader expands it to the events it holds (the
-- event storage's queries, counts and cleanup; the event_log view below); rows without
-- batch_ids (all rows written before this version, and every other event) are one event.
ALTER TABLE {s}.events
    ADD COLUMN batch_ids text,
    ADD COLUMN batch_task_ids text,
    ADD COLUMN batch_size integer,
    ADD COLUMN batch_task_min text COLLATE "C",
    ADD COLUMN batch_task_max text COLLATE "C";
-- A query of one task's events reads the id lists of the batch rows whose range of
-- task ids holds its id, found on this index (one entry a batch), not of every batch
-- row: the app's task ids are time-ordered, so a batch's range is narrow.
CREATE INDEX events_batch_tasks ON {s}.events (batch_task_min, batch_task_max)
    WHERE batch_ids IS NOT NULL;
-- Out of line without compression: the lists of a batch of 500 are ~33 kB of ids,
-- which pglz compressed at ~1.3 us of server CPU a task (compressed, they would also be
-- decompressed by every read that expands them).
ALTER TABLE {s}.events
    ALTER COLUMN batch_ids SET STORAGE EXTERNAL,
    ALTER COLUMN batch_task_ids SET STORAGE EXTERNAL;
COMMENT ON COLUMN {s}.events.batch_ids IS
    'Set on a row that holds several events: their ids, space-separated (task ids in batch_task_ids, '
    'same order). Read the event_log view to see one row per event.';

CREATE OR REPLACE VIEW {s}.event_log AS
SELECT e.seq, e.id, e.task_id, coalesce(e.detail ->> 'name', t.name) AS task_name, e.queue, e.type,
       to_timestamp(e.ts) AS occurred_at, e.worker_id,
       CASE WHEN jsonb_typeof(e.detail -> 'duration') = 'number'
            THEN (e.detail ->> 'duration')::float8 END AS duration,
       e.detail, e.ts
FROM (
    SELECT seq, id, task_id, queue, type, ts, worker_id, detail FROM {s}.events
    WHERE batch_ids IS NULL
    UNION ALL
    SELECT b.seq, x.id, x.task_id, b.queue, b.type, b.ts, b.worker_id, b.detail
    FROM {s}.events b
         CROSS JOIN LATERAL unnest(string_to_array(b.batch_ids, ' '),
                                   string_to_array(b.batch_task_ids, ' ')) AS x(id, task_id)
    WHERE b.task_id = '' AND b.batch_ids IS NOT NULL
) e LEFT JOIN {s}.tasks t ON t.id = e.task_id;
