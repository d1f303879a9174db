-- Two corrections of what a statement's changed rows imply (found by writing as other
-- programs do):
-- - One statement that empties a series and fills it again (a CTE's DELETE feeding an
--   INSERT, a MERGE that deletes what it matches and inserts the rest) runs its DELETE's
--   trigger first, which sees the series filled again: the count went to 0, was held at 1
--   by `greatest` (the catalog's CHECK wanted more than 0), and the INSERT's trigger then
--   counted one candle too many. A count is now its deltas, 0 allowed for as long as the
--   statement's other trigger has not run (and held at 0, not below, where the catalog
--   already counted fewer candles than the table holds: a write that skipped the triggers,
--   which `check` finds, must not make the next DELETE fail).
-- - A candle another program's UPDATE moved to a key that had none (another ticker, time
--   or timeframe) kept the revision it had where it was; it is a first version (0) where it
--   is now.
-- `candle_apply` as in 0009 and `candle_changes_apply` as in 0010, with those changes.

ALTER TABLE candle_series DROP CONSTRAINT IF EXISTS candle_series_count_check;
ALTER TABLE candle_series ADD CONSTRAINT candle_series_count_check CHECK (count >= 0);

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
            count = greatest(cs.count + d.added - d.removed, 0),
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

CREATE OR REPLACE FUNCTION candle_changes_apply(
    k_ticker text[], k_tf integer[], k_ts timestamptz[], k_old bigint[], k_new bigint[],
    k_fix boolean[]
) RETURNS void LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    xid xid8 := pg_current_xact_id();
    d record;  -- per series: t, tf, added, removed, lo, hi, x
    r record;  -- runs removed: t, tf, lo, hi
BEGIN
    -- another program's update: its changed candles' revision and transaction
    PERFORM set_config('marketdata.fixing', 'on', true);
    UPDATE candles c SET
        revision = CASE WHEN f.old_hash IS NULL THEN 0 ELSE c.revision + 1 END,
        xact = xid
    FROM unnest(k_ticker, k_tf, k_ts, k_old, k_new, k_fix)
        AS f(ticker, tf_min, ts, old_hash, new_hash, fix)
    WHERE f.fix AND f.new_hash IS NOT NULL
      AND c.ticker = f.ticker AND c.tf_min = f.tf_min AND c.ts = f.ts;
    PERFORM set_config('marketdata.fixing', 'off', true);
    SELECT array_agg(s.ticker) AS t, array_agg(s.tf_min) AS tf, array_agg(s.a) AS added,
           array_agg(s.r) AS removed, array_agg(s.lo) AS lo, array_agg(s.hi) AS hi,
           array_agg(s.x) AS x
    INTO d
    FROM (SELECT f.ticker, f.tf_min,
                 count(*) FILTER (WHERE f.old_hash IS NULL) AS a,
                 count(*) FILTER (WHERE f.new_hash IS NULL) AS r,
                 min(f.ts) AS lo, max(f.ts) AS hi,
                 bit_xor(coalesce(f.old_hash, 0) # coalesce(f.new_hash, 0)) AS x
          FROM unnest(k_ticker, k_tf, k_ts, k_old, k_new)
              AS f(ticker, tf_min, ts, old_hash, new_hash)
          GROUP BY f.ticker, f.tf_min) s;
    SELECT array_agg(g.ticker) AS t, array_agg(g.tf_min) AS tf, array_agg(g.lo) AS lo,
           array_agg(g.hi) AS hi
    INTO r
    FROM candle_removed_runs(
        ARRAY(SELECT f.t FROM unnest(k_ticker, k_tf, k_ts, k_new) f(t, tf, ts, h)
              WHERE f.h IS NULL ORDER BY f.t, f.tf, f.ts),
        ARRAY(SELECT f.tf FROM unnest(k_ticker, k_tf, k_ts, k_new) f(t, tf, ts, h)
              WHERE f.h IS NULL ORDER BY f.t, f.tf, f.ts),
        ARRAY(SELECT f.ts FROM unnest(k_ticker, k_tf, k_ts, k_new) f(t, tf, ts, h)
              WHERE f.h IS NULL ORDER BY f.t, f.tf, f.ts)) g;
    IF d.t IS NULL THEN
        RETURN;  -- no row
    END IF;
    PERFORM candle_apply(d.t, d.tf, d.added, d.removed, d.lo, d.hi, d.x, r.t, r.tf, r.lo, r.hi);
END
$$;

-- Each looks names up in the schema of `candles`, then pg_temp (as 0010 set them)
DO $$
DECLARE
    home text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = 'candles'::regclass);
    f record;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure AS signature
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = home AND p.proname IN ('candle_apply', 'candle_changes_apply')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f.signature, home);
    END LOOP;
END
$$;
