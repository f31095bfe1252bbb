-- Enqueues NOTIFY the queue's workers from their own INSERT statement (a pg_notify per
-- queue that got a ready task, in a CTE of queue.INSERT) instead of from a statement
-- trigger: the trigger's plpgsql call, its transition table and its query were half of a
-- one-task enqueue's executor time (65-76 of 140-170 us, auto_explain). Every insert
-- into the tasks table is one of OmniQ's statements; a row that becomes ready by an
-- UPDATE still notifies through tasks_notify_update.
DROP TRIGGER IF EXISTS tasks_notify_insert ON {s}.tasks;
DROP FUNCTION IF EXISTS {s}.notify_inserted();
