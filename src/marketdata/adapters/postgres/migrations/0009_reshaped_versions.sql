-- A ticker whose stored timeframes changed (a series added, or one deleted whole) has all
-- its series take the statement's version, not only those written: its other timeframes
-- may be made from another source now, and an ETag is the version of the source it was
-- made from (two timeframes written by one statement share one). `candle_apply` as in 0006,
-- with that, and the work memory 0008 gave it.

CREATE OR REPLACE FUNCTION candle_apply(
    d_ticker text[], d_tf integer[], d_added bigint[], d_removed bigint[],
    d_lo timestamptz[], d_hi timestamptz[], d_sum bigint[],
    r_ticker text[], r_tf integer[], r_lo timestamptz[], r_hi timestamptz[]
) RETURNS void LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET work_mem = '64MB' AS $$
DECLARE
    xid xid8 := pg_current_xact_id();
    new_version bigint;
    reshaped text[];
    payload text;
    level record;
    spans record;
BEGIN
    PERFORM pg_advisory_xact_lock(1919904876, h)
    FROM (SELECT DISTINCT hashtext(t) AS h FROM unnest(d_ticker) t ORDER BY 1) s;
    new_version := nextval('candle_series_version');

    -- the catalog: new series in, emptied ones out, the others counted again, each with the
    -- new version (first and last read again, from the index, where candles were removed)
    WITH d AS (
        SELECT * FROM unnest(d_ticker, d_tf, d_added, d_removed, d_lo, d_hi, d_sum)
            AS d(ticker, tf_min, added, removed, lo, hi, x)
    ), gone AS (
        DELETE FROM candle_series cs USING d
        WHERE cs.ticker = d.ticker AND cs.tf_min = d.tf_min AND d.removed > 0
          AND NOT EXISTS (SELECT 1 FROM candles c WHERE c.ticker = d.ticker AND c.tf_min = d.tf_min)
        RETURNING cs.ticker
    ), kept AS (
        UPDATE candle_series cs SET
            count = greatest(cs.count + d.added - d.removed, 1),
            first_ts = CASE WHEN d.removed > 0
                THEN (SELECT min(c.ts) FROM candles c WHERE c.ticker = d.ticker AND c.tf_min = d.tf_min)
                ELSE least(cs.first_ts, d.lo) END,
            last_ts = CASE WHEN d.removed > 0
                THEN (SELECT max(c.ts) FROM candles c WHERE c.ticker = d.ticker AND c.tf_min = d.tf_min)
                ELSE greatest(cs.last_ts, d.hi) END,
            checksum = cs.checksum # d.x,
            version = new_version
        FROM d
        WHERE cs.ticker = d.ticker AND cs.tf_min = d.tf_min
          AND (d.removed = 0 OR EXISTS (
              SELECT 1 FROM candles c WHERE c.ticker = d.ticker AND c.tf_min = d.tf_min))
        RETURNING cs.ticker, cs.tf_min
    ), added AS (
        INSERT INTO candle_series AS cs (ticker, tf_min, first_ts, last_ts, count, checksum,
                                         version)
        SELECT d.ticker, d.tf_min,
               (SELECT min(c.ts) FROM candles c WHERE c.ticker = d.ticker AND c.tf_min = d.tf_min),
               (SELECT max(c.ts) FROM candles c WHERE c.ticker = d.ticker AND c.tf_min = d.tf_min),
               d.added - d.removed, d.x, new_version
        FROM d
        WHERE d.added > d.removed
          AND NOT EXISTS (SELECT 1 FROM kept k WHERE k.ticker = d.ticker AND k.tf_min = d.tf_min)
        ORDER BY d.ticker, d.tf_min
        ON CONFLICT (ticker, tf_min) DO NOTHING
        RETURNING cs.ticker
    )
    SELECT array_agg(DISTINCT t) INTO reshaped
    FROM (SELECT ticker FROM gone UNION ALL SELECT ticker FROM added) s(t);

    -- a ticker that gained or lost a series may answer its other timeframes from another
    -- source now (hours from its 15-minute candles once its 5-minute ones are gone): every
    -- series of it takes the new version, so no ETag or kept answer of the old source stands
    IF reshaped IS NOT NULL THEN
        UPDATE candle_series cs SET version = new_version
        WHERE cs.ticker = ANY(reshaped) AND cs.version <> new_version;
    END IF;

    -- the rollups: rebuilt wholly for a ticker whose stored timeframes changed; else the
    -- buckets over the spans changed, level by level, finest first, tickers alike together
    IF EXISTS (SELECT 1 FROM rollup_timeframes) THEN
        IF reshaped IS NOT NULL THEN
            PERFORM candle_rollups_build(reshaped);
        END IF;
        FOR level IN
            SELECT l.tf_min, l.tz, l.base_tf, l.parent_tf, l.parent_tz,
                   array_agg(l.ticker) AS tickers
            FROM candle_rollup_levels(
                     ARRAY(SELECT DISTINCT t FROM unnest(d_ticker) t
                           WHERE reshaped IS NULL OR t <> ALL(reshaped)), true) l
            GROUP BY l.tf_min, l.tz, l.base_tf, l.parent_tf, l.parent_tz
            ORDER BY l.tf_min, l.tz, l.base_tf
        LOOP
            SELECT array_agg(s.ticker) AS t, array_agg(s.lo) AS lo, array_agg(s.hi) AS hi
            INTO spans
            FROM unnest(d_ticker, d_tf, d_lo, d_hi) s(ticker, tf_min, lo, hi)
            WHERE s.tf_min = level.base_tf AND s.ticker = ANY(level.tickers);
            IF spans.t IS NOT NULL THEN
                PERFORM candle_rollups_refresh(spans.t, spans.lo, spans.hi, level.tf_min,
                                               level.tz, level.base_tf, level.parent_tf,
                                               level.parent_tz);
            END IF;
        END LOOP;
    END IF;

    -- the change feed: what each series got (its rows, read back by transaction) and the runs
    -- of candles it lost; one NOTIFY naming the transaction and its tickers
    INSERT INTO candle_changes (xid, ticker, tf_min, first_ts, last_ts, version, kind)
    SELECT xid, ticker, tf_min, lo, hi, new_version, 'written'
    FROM unnest(d_ticker, d_tf, d_added, d_lo, d_hi, d_removed) d(ticker, tf_min, added, lo, hi, removed)
    WHERE added > 0 OR removed = 0
    UNION ALL
    SELECT xid, ticker, tf_min, lo, hi, new_version, 'removed'
    FROM unnest(r_ticker, r_tf, r_lo, r_hi) r(ticker, tf_min, lo, hi);
    payload := json_build_object('x', xid::text::bigint, 'v', new_version,
                                 't', (SELECT array_agg(DISTINCT t) FROM unnest(d_ticker) t))::text;
    IF octet_length(payload) > 7000 THEN
        payload := json_build_object('x', xid::text::bigint, 'v', new_version)::text;
    END IF;
    PERFORM pg_notify('marketdata_candles', payload);
END
$$;
