-- Results NOTIFY their waiters from the statements that write them (a pg_notify per
-- row the upsert returns, in results.UPSERT and queue.FINISH_MANY) instead of from two
-- statement triggers with transition tables (insert and update): each cost a plpgsql
-- call and a query per finish_many, on the path from a task's end to its result seen.
DROP TRIGGER IF EXISTS results_notify_insert ON {s}.results;
DROP TRIGGER IF EXISTS results_notify_update ON {s}.results;
DROP FUNCTION IF EXISTS {s}.notify_results();
