-- Rollups: candles of coarser timeframes (15 minutes, an hour, a day, ... as configured in
-- ROLLUP_TF_MINS), kept at write time in the writer's own transaction, each made of the
-- finest stored timeframe of its ticker that divides it. Buckets are counted from the epoch
-- in UTC, or (for whole days and weeks) in local time of `tz`, as resampling does.
-- They never mix with stored candles: a timeframe stored for a ticker has no rollup.
-- `candles` is how many stored candles a row holds.
CREATE TABLE IF NOT EXISTS candle_rollups (
    ticker  text             NOT NULL,
    tf_min  integer          NOT NULL,
    tz      text             NOT NULL DEFAULT 'UTC',
    ts      timestamptz      NOT NULL,
    open    double precision NOT NULL,
    high    double precision NOT NULL,
    low     double precision NOT NULL,
    close   double precision NOT NULL,
    volume  double precision NOT NULL,
    openint bigint           NOT NULL,
    candles integer          NOT NULL CHECK (candles > 0),
    PRIMARY KEY (ticker, tf_min, tz, ts)
);

-- The rollups kept: every writer keeps each of them; readers use those that are `ready`
-- (built for all the data, by `marketdata migrate`, `marketdata rollups` or the service at
-- start-up). Filled from ROLLUP_TF_MINS, not here.
CREATE TABLE IF NOT EXISTS rollup_timeframes (
    tf_min integer NOT NULL CHECK (tf_min > 1),
    tz     text    NOT NULL DEFAULT 'UTC',
    ready  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tf_min, tz)
);

-- What a bucket takes from its first and last candles, gathered by one ordered aggregate
-- (each ordered aggregate sorts its group: one sort instead of three).
CREATE TYPE candle_edge AS (open double precision, close double precision, openint bigint);
