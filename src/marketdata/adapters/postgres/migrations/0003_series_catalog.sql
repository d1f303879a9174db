-- The series catalog: one row per (ticker, tf_min) with its first and last candle and its
-- count, kept exact by every write path in the write's own transaction, so that replays,
-- coverage and "which timeframes are stored" read one row instead of counting candles.
-- `version` takes a new value from the sequence whenever the series changes (never reused,
-- even by a series deleted and written again).
CREATE SEQUENCE IF NOT EXISTS candle_series_version;

CREATE TABLE IF NOT EXISTS candle_series (
    ticker   text        NOT NULL,
    tf_min   integer     NOT NULL,
    first_ts timestamptz NOT NULL,
    last_ts  timestamptz NOT NULL,
    count    bigint      NOT NULL CHECK (count > 0),
    version  bigint      NOT NULL DEFAULT nextval('candle_series_version'),
    PRIMARY KEY (ticker, tf_min)
);

-- Filled from what is stored already (a seed database included): one pass over candles.
INSERT INTO candle_series (ticker, tf_min, first_ts, last_ts, count)
SELECT ticker, tf_min, min(ts), max(ts), count(*) FROM candles GROUP BY ticker, tf_min
ON CONFLICT (ticker, tf_min) DO NOTHING;
