-- Global rate limits (omniq.limits): when each rate key ('task:<name>', 'queue:<queue>')
-- next allows a start, by the server's clock (epoch seconds). A limited reserve also
-- locks a row 'run:<name>' for each task name with a concurrency limit, so reservers
-- count that name's running tasks one at a time; its next_at is unused.
CREATE TABLE IF NOT EXISTS {s}.limits (
    key     text PRIMARY KEY,
    next_at float8 NOT NULL
);
