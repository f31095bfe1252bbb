-- Live workers (omniq workers / omniq health): each worker registers at start and on its
-- heartbeat cadence; a row is listed while expires_at (epoch seconds, by the server's
-- clock) is in the future. data is the msgpack-encoded omniq.models.WorkerInfo.
CREATE TABLE IF NOT EXISTS {s}.workers (
    id         text PRIMARY KEY,
    expires_at float8 NOT NULL,
    data       bytea NOT NULL
);
