-- Live: each candle knows how many times it was written again with other values
-- (`revision`, sent to live clients so they can tell a correction from a new bar) and the
-- version of the write that last changed it (`version`, the catalog's, so that the rows of
-- one write can be read back). Both are added with a constant default: no table rewrite,
-- and the seed's writers keep working.
ALTER TABLE candles ADD COLUMN IF NOT EXISTS revision integer NOT NULL DEFAULT 0;
ALTER TABLE candles ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0;

-- One row per series a write changed, with the transaction that wrote it: what a
-- listener that was away reads back (by the transactions its last snapshot did not see).
-- Kept for a day (LIVE_CHANGES_KEPT_HOURS).
CREATE TABLE IF NOT EXISTS candle_changes (
    xid      xid8        NOT NULL DEFAULT pg_current_xact_id(),
    ticker   text        NOT NULL,
    tf_min   integer     NOT NULL,
    first_ts timestamptz NOT NULL,
    last_ts  timestamptz NOT NULL,
    version  bigint      NOT NULL,
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS candle_changes_at ON candle_changes (at);
