-- Any writer, with its own session and rights (found by writing as users' programs do):
-- - rows that come with a transaction's mark of their own (`xact`: a dump of another
--   database restored whole, `INSERT ... SELECT *` from one) are marked with the writer's
--   transaction, as the service's own rows are: listeners read a transaction's rows back by
--   it, and live bars keep only the candles of transactions up to theirs;
-- - a writer whose search_path does not name the schema of `candles` (pg_dump's scripts and
--   pg_restore set it empty; a feed handler may put its own schema first) and one allowed
--   to write `candles` and nothing else (a role granted INSERT on it alone) could not write:
--   the triggers looked names up in the writer's path and ran with the writer's rights. The
--   trigger functions now run as their owner (SECURITY DEFINER; they can only be called as
--   triggers), and every function that runs statements looks names up in the schema of
--   `candles`, then pg_temp. The SQL functions inlined into those statements keep no setting
--   (one would keep them from being inlined): they are planned in their caller's path.
-- An UPDATE's changed rows are applied by a function of their own, `candle_changes_apply`
-- (0011's replicated rows take the same path).

-- What the changed rows of a statement imply (each row's key, the hash of its values before
-- and after, NULL where it was not or is no more, and whether it needs this transaction's
-- mark): the revision and mark of the rows another program changed, the catalog's counts,
-- spans and checksums, the runs of candles removed, then `candle_apply`. For an UPDATE's
-- rows (as 0006 did within `candles_changed`), and for a replicated transaction's (0011).
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
        revision = c.revision + CASE WHEN f.old_hash IS NULL THEN 0 ELSE 1 END,
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

-- `candles_changed` as in 0006, with the INSERT's marks, its UPDATE's rows applied by
-- `candle_changes_apply`.
CREATE OR REPLACE FUNCTION candles_changed() RETURNS trigger LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    xid xid8 := pg_current_xact_id();
    d record;  -- per series: t, tf, added, removed, lo, hi, x
    r record;  -- runs removed: t, tf, lo, hi
    u record;  -- an update's changed rows: t, tf, ts, old_hash, new_hash, fix
BEGIN
    IF current_setting('marketdata.fixing', true) = 'on' THEN
        RETURN NULL;
    END IF;
    SELECT NULL::text[] AS t, NULL::int[] AS tf, NULL::timestamptz[] AS lo,
           NULL::timestamptz[] AS hi INTO r;
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(s.ticker) AS t, array_agg(s.tf_min) AS tf, array_agg(s.n) AS added,
               array_agg(0::bigint) AS removed, array_agg(s.lo) AS lo, array_agg(s.hi) AS hi,
               array_agg(s.x) AS x, sum(s.marked) AS marked
        INTO d
        FROM (SELECT n.ticker, n.tf_min, count(*) AS n, min(n.ts) AS lo, max(n.ts) AS hi,
                     bit_xor(candle_hash(n.ticker, n.tf_min, n.ts, n.open, n.high, n.low,
                                         n.close, n.volume, n.openint)) AS x,
                     count(*) FILTER (WHERE n.xact <> xid) AS marked
              FROM new_rows n GROUP BY n.ticker, n.tf_min) s;
        IF d.marked > 0 THEN  -- rows with another transaction's mark: this one's
            PERFORM set_config('marketdata.fixing', 'on', true);
            UPDATE candles c SET xact = xid
            FROM new_rows n
            WHERE n.xact <> xid
              AND c.ticker = n.ticker AND c.tf_min = n.tf_min AND c.ts = n.ts;
            PERFORM set_config('marketdata.fixing', 'off', true);
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(s.ticker) AS t, array_agg(s.tf_min) AS tf,
               array_agg(0::bigint) AS added, array_agg(s.n) AS removed,
               array_agg(s.lo) AS lo, array_agg(s.hi) AS hi, array_agg(s.x) AS x
        INTO d
        FROM (SELECT o.ticker, o.tf_min, count(*) AS n, min(o.ts) AS lo, max(o.ts) AS hi,
                     bit_xor(candle_hash(o.ticker, o.tf_min, o.ts, o.open, o.high, o.low,
                                         o.close, o.volume, o.openint)) AS x
              FROM old_rows o GROUP BY o.ticker, o.tf_min) s;
        SELECT array_agg(o.ticker) AS t, array_agg(o.tf_min) AS tf, array_agg(o.ts) AS ts
        INTO u FROM old_rows o;
        SELECT array_agg(g.ticker) AS t, array_agg(g.tf_min) AS tf, array_agg(g.lo) AS lo,
               array_agg(g.hi) AS hi
        INTO r FROM candle_removed_runs(u.t, u.tf, u.ts) g;
    ELSE
        SELECT array_agg(coalesce(o.ticker, n.ticker)) AS t,
               array_agg(coalesce(o.tf_min, n.tf_min)) AS tf,
               array_agg(coalesce(o.ts, n.ts)) AS ts, array_agg(o.h) AS old_hash,
               array_agg(n.h) AS new_hash, array_agg(n.xact IS DISTINCT FROM xid) AS fix
        INTO u
        FROM (SELECT o.ticker, o.tf_min, o.ts,
                     candle_hash(o.ticker, o.tf_min, o.ts, o.open, o.high, o.low, o.close,
                                 o.volume, o.openint) AS h FROM old_rows o) o
        FULL JOIN (SELECT n.ticker, n.tf_min, n.ts, n.xact,
                          candle_hash(n.ticker, n.tf_min, n.ts, n.open, n.high, n.low, n.close,
                                      n.volume, n.openint) AS h FROM new_rows n) n
            ON o.ticker = n.ticker AND o.tf_min = n.tf_min AND o.ts = n.ts
        WHERE o.h IS DISTINCT FROM n.h;
        IF u.t IS NULL THEN
            RETURN NULL;  -- no value changed
        END IF;
        PERFORM candle_changes_apply(u.t, u.tf, u.ts, u.old_hash, u.new_hash, u.fix);
        RETURN NULL;
    END IF;
    IF d.t IS NULL THEN
        RETURN NULL;  -- no row
    END IF;
    PERFORM candle_apply(d.t, d.tf, d.added, d.removed, d.lo, d.hi, d.x, r.t, r.tf, r.lo, r.hi);
    RETURN NULL;
END
$$;

-- The trigger functions run as their owner; every function that runs statements looks names
-- up in the schema of `candles` only (pg_catalog first, as always), then pg_temp.
DO $$
DECLARE
    home text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = 'candles'::regclass);
    f record;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure AS signature, p.proname
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = home
          AND p.proname IN ('candles_changed', 'candles_truncated', 'candle_apply',
                            'candle_changes_apply',
                            'candle_rollups_build', 'candle_rollups_refresh', 'candle_mend',
                            'candle_rollups_drift')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f.signature, home);
        IF f.proname IN ('candles_changed', 'candles_truncated') THEN
            EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER', f.signature);
        END IF;
    END LOOP;
END
$$;
