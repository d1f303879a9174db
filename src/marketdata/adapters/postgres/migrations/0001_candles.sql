-- The seed's table, unchanged, so that a seed database works as is.
CREATE TABLE IF NOT EXISTS candles (
    ticker  text             NOT NULL,
    tf_min  integer          NOT NULL CHECK (tf_min > 0),
    ts      timestamptz      NOT NULL,
    open    double precision NOT NULL,
    high    double precision NOT NULL,
    low     double precision NOT NULL,
    close   double precision NOT NULL,
    volume  double precision NOT NULL,
    openint bigint DEFAULT 0,
    PRIMARY KEY (ticker, tf_min, ts)
);

-- Every query is led by (ticker, tf_min, ts), and /symbols skip-scans its first column.
-- The primary key is that index; a table laid out without it gets one.
DO $$
DECLARE
    col_ticker int2 := (SELECT attnum FROM pg_attribute
                        WHERE attrelid = 'candles'::regclass AND attname = 'ticker');
    col_tf     int2 := (SELECT attnum FROM pg_attribute
                        WHERE attrelid = 'candles'::regclass AND attname = 'tf_min');
    col_ts     int2 := (SELECT attnum FROM pg_attribute
                        WHERE attrelid = 'candles'::regclass AND attname = 'ts');
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i
        WHERE i.indrelid = 'candles'::regclass
          AND i.indnkeyatts >= 3
          AND i.indkey[0] = col_ticker AND i.indkey[1] = col_tf AND i.indkey[2] = col_ts
    ) THEN
        CREATE UNIQUE INDEX candles_ticker_tf_min_ts_idx ON candles (ticker, tf_min, ts);
    END IF;
END
$$;
