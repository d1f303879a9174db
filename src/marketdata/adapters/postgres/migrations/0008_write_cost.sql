-- What a write costs the writer: the same catalog, checksums and rollups as 0006, made with
-- less work per row (bench/README.md "Ingest": a foreign COPY of 2,000,000 candles spent more
-- time in the triggers than in the COPY).

-- A row's hash, chained through the built-in hash of each value: `hash_record_extended`
-- looked its record type up for every row (a third of the checksum's cost). The series'
-- key is left out: a checksum belongs to its catalog row, whose key is the series.
-- A new hash makes every checksum new: see the end of this file.
CREATE OR REPLACE FUNCTION pg_temp.candle_hash_0006(
    ticker text, tf_min integer, ts timestamptz, open float8, high float8, low float8,
    close float8, volume float8, openint bigint
) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT hash_record_extended(
        ROW(ticker, tf_min, ts, open, high, low, close, volume, coalesce(openint, 0)), 0)
$$;

CREATE OR REPLACE FUNCTION candle_hash(
    ticker text, tf_min integer, ts timestamptz, open float8, high float8, low float8,
    close float8, volume float8, openint bigint
) RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT hashint8extended(coalesce(openint, 0), hashfloat8extended(volume,
           hashfloat8extended(close, hashfloat8extended(low, hashfloat8extended(high,
           hashfloat8extended(open, timestamp_hash_extended(ts AT TIME ZONE 'UTC', 0)))))))
$$;

-- The buckets of one rollup level (as in 0006): a UTC bucket binned without converting to
-- and from local time, and the first open and last close and open interest taken from arrays
-- of plain values (an array of composites cost a quarter of the level's time).
DO $$
DECLARE
    ordered text := CASE WHEN current_setting('server_version_num')::int >= 160000
                         THEN ' ORDER BY r.ts' ELSE '' END;
BEGIN
    EXECUTE format($body$
CREATE OR REPLACE FUNCTION candle_buckets(
    ticker text, base_tf integer, level_tf integer, level_tz text, lo timestamptz,
    hi timestamptz, parent_tf integer DEFAULT NULL, parent_tz text DEFAULT NULL
) RETURNS TABLE (bucket timestamptz, open float8, high float8, low float8, close float8,
                 volume float8, openint bigint, candles integer)
LANGUAGE sql STABLE AS $fn$
    SELECT r.bucket, (array_agg(r.o%1$s))[1], max(r.h), min(r.l),
           (array_agg(r.c%1$s))[count(*)], coalesce(sum(r.v), 0),
           (array_agg(r.oi%1$s))[count(*)], sum(r.n)::int
    FROM (
        SELECT CASE WHEN level_tz = 'UTC'
                    THEN date_bin(make_interval(mins => level_tf), s.ts,
                                  timestamptz '1970-01-01 00:00+00')
                    ELSE date_bin(make_interval(mins => level_tf), s.ts AT TIME ZONE level_tz,
                                  CASE WHEN level_tf %% 10080 = 0 THEN timestamp '1970-01-05'
                                       ELSE timestamp '1970-01-01' END)
                         AT TIME ZONE level_tz END AS bucket, s.*
        FROM (
            SELECT c.ts, c.open::float8 AS o, c.high::float8 AS h, c.low::float8 AS l,
                   c.close::float8 AS c, c.volume::float8 AS v,
                   coalesce(c.openint, 0)::int8 AS oi, 1 AS n
            FROM candles c
            WHERE parent_tf IS NULL AND c.ticker = candle_buckets.ticker
              AND c.tf_min = base_tf AND c.ts >= lo AND c.ts < hi
            UNION ALL
            SELECT p.ts, p.open, p.high, p.low, p.close, p.volume, p.openint, p.candles
            FROM candle_rollups p
            WHERE parent_tf IS NOT NULL AND p.ticker = candle_buckets.ticker
              AND p.tf_min = parent_tf AND p.tz = parent_tz AND p.ts >= lo AND p.ts < hi
        ) s
        ORDER BY 1, s.ts
    ) r
    GROUP BY r.bucket
$fn$
$body$, ordered);
END
$$;

-- Every rollup level of these tickers rebuilt wholly (as in 0006). A level of many rows is
-- planned for its own values: `candle_buckets` inlined (its parent level a plain value, not
-- a subquery), the custom plan keeps only the source it reads (candles or the parent level)
-- and the zone's binning, where the generic plan carried both (a fifth of the level's time
-- for 100,000 candles). A level of few keeps the plan made once: planning each would cost
-- more than the work (the first bar of 2,000 new tickers in one statement: 1.4 s, not 0.2).
-- Each level's buckets are inserted in the order they are made, by bucket.
CREATE OR REPLACE FUNCTION candle_rollups_build(tickers text[], only_levels text[] DEFAULT NULL)
RETURNS void LANGUAGE plpgsql
SET max_parallel_workers_per_gather = 0 SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    level record;
    parent integer;
BEGIN
    DELETE FROM candle_rollups r WHERE r.ticker = ANY(tickers)
        AND (only_levels IS NULL OR r.tf_min || '@' || r.tz = ANY(only_levels));
    FOR level IN
        SELECT * FROM candle_rollup_levels(tickers, false) l
        WHERE only_levels IS NULL OR l.tf_min || '@' || l.tz = ANY(only_levels)
        ORDER BY l.ticker, l.tf_min, l.tz
    LOOP
        PERFORM set_config('plan_cache_mode',
                           CASE WHEN (SELECT s.count FROM candle_series s
                                      WHERE s.ticker = level.ticker
                                        AND s.tf_min = level.base_tf) > 10000
                                THEN 'force_custom_plan' ELSE 'force_generic_plan' END, true);
        parent := CASE WHEN only_levels IS NULL
                            OR level.parent_tf || '@' || level.parent_tz = ANY(only_levels)
                            OR EXISTS (SELECT 1 FROM rollup_timeframes r WHERE r.ready
                                       AND r.tf_min = level.parent_tf
                                       AND r.tz = level.parent_tz)
                       THEN level.parent_tf END;
        INSERT INTO candle_rollups (ticker, tf_min, tz, ts, open, high, low, close, volume,
                                    openint, candles)
        SELECT level.ticker, level.tf_min, level.tz, b.*
        FROM candle_buckets(level.ticker, level.base_tf, level.tf_min, level.tz, '-infinity',
                            'infinity', parent, level.parent_tz) b;
    END LOOP;
END
$$;

-- The work memory of what a statement's rollups take: a ticker's rows sorted by bucket in
-- memory rather than on disk (100,000 five-minute candles: 14 MB).
ALTER FUNCTION candle_apply(text[], integer[], bigint[], bigint[], timestamptz[],
                            timestamptz[], bigint[], text[], integer[], timestamptz[],
                            timestamptz[])
    SET work_mem = '64MB';
ALTER FUNCTION candle_rollups_build(text[], text[]) SET work_mem = '64MB';

-- Every checksum made again with the new hash, in one pass over candles that also checks it
-- with the old one: a series whose checksum disagreed (a write that skipped the triggers) is
-- mended and named, as 0006 did.
DO $$
DECLARE
    drifted text[];
    m record;
BEGIN
    CREATE TEMP TABLE candle_sums ON COMMIT DROP AS
    SELECT c.ticker, c.tf_min, count(*) AS count, min(c.ts) AS first_ts, max(c.ts) AS last_ts,
           bit_xor(pg_temp.candle_hash_0006(c.ticker, c.tf_min, c.ts, c.open, c.high, c.low,
                                            c.close, c.volume, c.openint)) AS before,
           bit_xor(candle_hash(c.ticker, c.tf_min, c.ts, c.open, c.high, c.low, c.close,
                               c.volume, c.openint)) AS after
    FROM candles c GROUP BY c.ticker, c.tf_min;
    UPDATE candle_series s SET checksum = t.after
    FROM candle_sums t
    WHERE s.ticker = t.ticker AND s.tf_min = t.tf_min
      AND (s.count, s.first_ts, s.last_ts, s.checksum)
          = (t.count, t.first_ts, t.last_ts, t.before);
    drifted := ARRAY(
        SELECT DISTINCT coalesce(t.ticker, s.ticker)
        FROM candle_sums t FULL JOIN candle_series s
            ON s.ticker = t.ticker AND s.tf_min = t.tf_min
        WHERE t.ticker IS NULL OR s.ticker IS NULL OR s.checksum <> t.after
        ORDER BY 1);
    IF cardinality(drifted) > 0 THEN
        FOR m IN SELECT * FROM candle_mend(drifted) LOOP
            RAISE NOTICE 'mended % tf_min=%: the catalog had %, the table has %', m.ticker,
                m.tf_min, coalesce(m.catalog_count::text, 'no row'),
                coalesce(m.table_count::text, 'no candles');
        END LOOP;
    END IF;
END
$$;
