-- Weeks kept in UTC (`ROLLUP_TF_MINS=10080`) count from a Monday, as every other week does:
-- 0008's UTC binning counted them from 1970-01-01, a Thursday (readers never took them:
-- their buckets did not fit the weeks asked for). `candle_buckets` as in 0008,
-- `candle_rollups_refresh` (the buckets a write touched) and `candle_rollup_levels` (a
-- level's parent: one whose buckets fall whole into its own, from their origins, in UTC
-- too) as in 0006, with that; the UTC levels of whole weeks built again, finest first,
-- each ticker's writers kept waiting meanwhile.

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
                                  CASE WHEN level_tf %% 10080 = 0
                                       THEN timestamptz '1970-01-05 00:00+00'
                                       ELSE timestamptz '1970-01-01 00:00+00' END)
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

CREATE OR REPLACE FUNCTION candle_rollups_refresh(
    tickers text[], los timestamptz[], his timestamptz[], level_tf integer, level_tz text,
    base_tf integer, parent_tf integer, parent_tz text
) RETURNS void LANGUAGE plpgsql
SET max_parallel_workers_per_gather = 0 SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    stride interval := make_interval(mins => level_tf);
    origin timestamp := CASE WHEN level_tf % 10080 = 0
                             THEN timestamp '1970-01-05' ELSE timestamp '1970-01-01' END;
    margin interval := CASE WHEN level_tz = 'UTC' THEN interval '0' ELSE interval '1 day' END;
BEGIN
    WITH spans AS (
        SELECT s.ticker,
               date_bin(stride, s.lo AT TIME ZONE level_tz, origin) AT TIME ZONE level_tz AS lo,
               date_bin(stride, s.hi AT TIME ZONE level_tz, origin) AT TIME ZONE level_tz AS hi
        FROM unnest(tickers, los, his) s(ticker, lo, hi)
    ), fresh AS (
        SELECT s.ticker, b.*
        FROM spans s
        CROSS JOIN LATERAL candle_buckets(s.ticker, base_tf, level_tf, level_tz,
                                          s.lo - margin, s.hi + stride + margin,
                                          parent_tf, parent_tz) b
        WHERE b.bucket >= s.lo AND b.bucket <= s.hi
    ), gone AS (
        DELETE FROM candle_rollups r USING spans s
        WHERE r.ticker = s.ticker AND r.tf_min = level_tf AND r.tz = level_tz
          AND r.ts >= s.lo AND r.ts <= s.hi
          -- NOT IN, hashed (neither side is ever NULL); NOT EXISTS was planned as a nested
          -- loop over `fresh`: quadratic in the tickers of one statement
          AND (r.ticker, r.ts) NOT IN (SELECT f.ticker, f.bucket FROM fresh f)
    )
    INSERT INTO candle_rollups AS r (ticker, tf_min, tz, ts, open, high, low, close, volume,
                                     openint, candles)
    SELECT f.ticker, level_tf, level_tz, f.bucket, f.open, f.high, f.low, f.close, f.volume,
           f.openint, f.candles
    FROM fresh f ORDER BY f.ticker, f.bucket
    ON CONFLICT (ticker, tf_min, tz, ts) DO UPDATE SET
        open = excluded.open, high = excluded.high, low = excluded.low,
        close = excluded.close, volume = excluded.volume, openint = excluded.openint,
        candles = excluded.candles
    WHERE (r.open, r.high, r.low, r.close, r.volume, r.openint, r.candles)
        IS DISTINCT FROM (excluded.open, excluded.high, excluded.low, excluded.close,
                          excluded.volume, excluded.openint, excluded.candles);
END
$$;


CREATE OR REPLACE FUNCTION candle_rollup_levels(tickers text[], ready_only boolean)
RETURNS TABLE (ticker text, tf_min integer, tz text, base_tf integer, parent_tf integer,
               parent_tz text)
LANGUAGE sql STABLE AS $$
    -- No join of one CTE with another: planned for a trigger, `tickers` is guessed at 10
    -- rows, and such joins ran as nested loops, quadratic in the tickers of one statement
    -- (one bar of 2,000 tickers: 3.3 s). A stored timeframe is probed in the catalog's
    -- index; a level's parent is picked from its ticker's few levels, gathered by a window.
    WITH stored AS (
        SELECT s.ticker, s.tf_min FROM candle_series s WHERE s.ticker = ANY(tickers)
    ), levels AS (
        SELECT st.ticker, r.tf_min, r.tz, r.ready, min(st.tf_min) AS base_tf
        FROM rollup_timeframes r
        JOIN stored st ON st.tf_min < r.tf_min AND r.tf_min % st.tf_min = 0
        WHERE NOT EXISTS (
            SELECT 1 FROM candle_series x WHERE x.ticker = st.ticker AND x.tf_min = r.tf_min)
        GROUP BY st.ticker, r.tf_min, r.tz, r.ready
    ), gathered AS (
        SELECT l.*, array_agg(l.tf_min) FILTER (WHERE l.ready OR NOT ready_only)
                        OVER (PARTITION BY l.ticker, l.base_tf, l.tz) AS usable
        FROM levels l
    )
    SELECT g.ticker, g.tf_min, g.tz, g.base_tf, p.tf_min,
           CASE WHEN p.tf_min IS NOT NULL THEN g.tz END
    FROM gathered g
    CROSS JOIN LATERAL (
        SELECT max(q) AS tf_min FROM unnest(g.usable) q
        WHERE q < g.tf_min AND g.tf_min % q = 0
          AND ((CASE WHEN g.tf_min % 10080 = 0 THEN 5760 ELSE 0 END)
               - (CASE WHEN q % 10080 = 0 THEN 5760 ELSE 0 END)) % q = 0
    ) p
    ORDER BY g.ticker, g.tf_min, g.tz
$$;

-- The refresh looks names up in the schema of `candles`, then pg_temp (as 0010 set it; the
-- SQL functions keep no setting, which would keep them from being inlined)
DO $$
DECLARE
    home text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = 'candles'::regclass);
BEGIN
    EXECUTE format('ALTER FUNCTION candle_rollups_refresh(text[], timestamptz[], timestamptz[],'
                   ' integer, text, integer, integer, text) SET search_path = %I, pg_temp', home);
END
$$;

DO $$
DECLARE
    level record;
BEGIN
    FOR level IN
        SELECT r.tf_min, array_agg(DISTINCT r.ticker) AS tickers FROM candle_rollups r
        WHERE r.tz = 'UTC' AND r.tf_min % 10080 = 0 GROUP BY r.tf_min ORDER BY r.tf_min
    LOOP
        PERFORM pg_advisory_xact_lock(1919904876, h)
        FROM (SELECT DISTINCT hashtext(t) AS h FROM unnest(level.tickers) t ORDER BY 1) s;
        PERFORM candle_rollups_build(level.tickers, ARRAY[level.tf_min || '@UTC']);
    END LOOP;
END
$$;
