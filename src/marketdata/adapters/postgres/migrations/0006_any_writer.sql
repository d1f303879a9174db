-- The database owns what a write implies. Whoever writes `candles` (the service, psql, COPY,
-- pg_restore, another program), statement-level triggers keep, in the writer's own
-- transaction and once per statement: the series catalog (count, first, last, a checksum of
-- the rows, a new version), the rollups, the change feed (`candle_changes`) and its NOTIFY.
-- The service's own write path only decodes, checks, stages and merges.

-- TimescaleDB refuses transition tables on hypertables before 2.18: say so, naming it.
DO $$
DECLARE
    installed text := (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb');
    hyper boolean := false;
BEGIN
    IF installed IS NULL THEN
        RETURN;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables'
            ' WHERE hypertable_name = ''candles'')' INTO hyper;
    IF hyper AND string_to_array(split_part(installed, '-', 1), '.')::int[] < ARRAY[2, 18] THEN
        RAISE EXCEPTION 'TimescaleDB % is installed and candles is a hypertable: the triggers '
            'that keep the series catalog, the rollups and the change feed use transition '
            'tables, which hypertables have from TimescaleDB 2.18 (ALTER EXTENSION timescaledb '
            'UPDATE)', installed;
    END IF;
END
$$;

-- The transaction that last wrote a row (its default: whoever inserts), so that listeners
-- read back the rows of one transaction. Replaces `version` (set by the service alone).
ALTER TABLE candles DROP COLUMN IF EXISTS version;
ALTER TABLE candles ADD COLUMN IF NOT EXISTS xact xid8 NOT NULL DEFAULT pg_current_xact_id();

-- The catalog's checksum: the XOR of every row's hash, kept by the triggers, so that `check`
-- finds any write that skipped them (session_replication_role = replica, DISABLE TRIGGER).
ALTER TABLE candle_series ADD COLUMN IF NOT EXISTS checksum bigint NOT NULL DEFAULT 0;

-- A change is `written` (read the rows of its transaction back), `removed` (a run of deleted
-- candles, first_ts..last_ts, with none left between) or `mended` (rebuilt from the table).
ALTER TABLE candle_changes ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'written';
CREATE INDEX IF NOT EXISTS candle_changes_xid ON candle_changes (xid);

CREATE OR REPLACE FUNCTION candle_hash(
    ticker text, tf_min integer, ts timestamptz, open float8, high float8, low float8,
    close float8, volume float8, openint bigint
) RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT hash_record_extended(
        ROW(ticker, tf_min, ts, open, high, low, close, volume, coalesce(openint, 0)), 0)
$$;

-- The rollups one ticker keeps (of `rollup_timeframes`): each whose timeframe it does not
-- store and that a stored timeframe divides, made of the finest such (`base_tf`), computed
-- from the coarsest finer level of the same base and zone whose buckets fall whole into its
-- own (`parent_tf`, `parent_tz`; ready ones only with `ready_only`), else from the candles.
-- UTC buckets count from the epoch; a zone's from its local 1970-01-01 (weeks: 01-05, a Monday).
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
          AND (g.tz = 'UTC' OR ((CASE WHEN g.tf_min % 10080 = 0 THEN 5760 ELSE 0 END)
                                - (CASE WHEN q % 10080 = 0 THEN 5760 ELSE 0 END))
                               % q = 0)
    ) p
    ORDER BY g.ticker, g.tf_min, g.tz
$$;

-- The buckets of one rollup level of one ticker whose source rows open in [lo, hi): bucket
-- (its start), open of the first row, highest high, lowest low, close and open interest of the
-- last, the sum of the volumes, and how many stored candles it holds. The rows are the candles
-- of `base_tf`, or, given a parent level, its buckets. UTC buckets count from the epoch; a
-- zone's from its local 1970-01-01 (weeks: 01-05, a Monday), days of 23 or 25 hours included.
-- The first and last rows come from one aggregate of a composite, fed the rows of a bucket in
-- time order: on PostgreSQL 16 and later an ordered aggregate over input the planner sorts
-- once; before 16 (where an ordered aggregate sorts each group again, 1.5 times the time) an
-- aggregate over a subquery sorted by bucket and time, which feeds its rows in that order
-- (the functions that use it run without parallel workers, which could interleave them).
DO $$
DECLARE
    edges text := CASE WHEN current_setting('server_version_num')::int >= 160000
                       THEN 'array_agg(ROW(r.o, r.c, r.oi)::candle_edge ORDER BY r.ts)'
                       ELSE 'array_agg(ROW(r.o, r.c, r.oi)::candle_edge)' END;
BEGIN
    EXECUTE format($body$
CREATE OR REPLACE FUNCTION candle_buckets(
    ticker text, base_tf integer, level_tf integer, level_tz text, lo timestamptz,
    hi timestamptz, parent_tf integer DEFAULT NULL, parent_tz text DEFAULT NULL
) RETURNS TABLE (bucket timestamptz, open float8, high float8, low float8, close float8,
                 volume float8, openint bigint, candles integer)
LANGUAGE sql STABLE AS $fn$
    SELECT g.bucket, (g.e[1]).open, g.h, g.l, (g.e[array_upper(g.e, 1)]).close, g.v,
           (g.e[array_upper(g.e, 1)]).openint, g.n
    FROM (
        SELECT r.bucket, %s AS e, max(r.h) AS h, min(r.l) AS l, coalesce(sum(r.v), 0) AS v,
               sum(r.n)::int AS n
        FROM (
            SELECT date_bin(make_interval(mins => level_tf), s.ts AT TIME ZONE level_tz,
                            CASE WHEN level_tz <> 'UTC' AND level_tf %% 10080 = 0
                                 THEN timestamp '1970-01-05' ELSE timestamp '1970-01-01' END)
                       AT TIME ZONE level_tz AS bucket, s.*
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
    ) g
$fn$
$body$, edges);
END
$$;

-- Buckets of one level recomputed from its source, for the tickers and spans given (`lo`,
-- `hi`: the first and last source candle changed in each): rewritten where they changed,
-- added, or deleted when nothing is left in them. A zone's buckets are read with a day's
-- margin, its rows picked by their bucket (local midnights that happen twice or not at all).
CREATE OR REPLACE FUNCTION candle_rollups_refresh(
    tickers text[], los timestamptz[], his timestamptz[], level_tf integer, level_tz text,
    base_tf integer, parent_tf integer, parent_tz text
) RETURNS void LANGUAGE plpgsql
SET max_parallel_workers_per_gather = 0 SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    stride interval := make_interval(mins => level_tf);
    origin timestamp := CASE WHEN level_tz <> 'UTC' AND level_tf % 10080 = 0
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

-- How many buckets of each rollup level of one ticker differ from the level made afresh from
-- its candles (volumes, sums of floats added in another order, to within 1e-9).
CREATE OR REPLACE FUNCTION candle_rollups_drift(ticker text)
RETURNS TABLE (tf_min integer, tz text, buckets bigint)
LANGUAGE sql STABLE SET max_parallel_workers_per_gather = 0 AS $$
    SELECT l.tf_min, l.tz, (
        SELECT count(*)
        FROM candle_buckets(l.ticker, l.base_tf, l.tf_min, l.tz, '-infinity', 'infinity') t
        FULL JOIN (SELECT * FROM candle_rollups k
                   WHERE k.ticker = l.ticker AND k.tf_min = l.tf_min AND k.tz = l.tz) k
            ON k.ts = t.bucket
        WHERE t.bucket IS NULL OR k.ts IS NULL
           OR (t.open, t.high, t.low, t.close, t.openint, t.candles)
              IS DISTINCT FROM (k.open, k.high, k.low, k.close, k.openint, k.candles)
           OR abs(t.volume - k.volume) > 1e-9 * greatest(abs(t.volume), 1)
    )
    FROM candle_rollup_levels(ARRAY[ticker], true) l
    JOIN rollup_timeframes r ON r.tf_min = l.tf_min AND r.tz = l.tz AND r.ready
    ORDER BY 1, 2
$$;

-- Every rollup level of these tickers rebuilt wholly, finest first (each may be made from the
-- one before); `only` (tf_min, tz pairs as 'tf@tz'), when given: just those levels. For a
-- ticker whose stored timeframes changed, for rollups being built, and for mending.
CREATE OR REPLACE FUNCTION candle_rollups_build(tickers text[], only_levels text[] DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET max_parallel_workers_per_gather = 0 AS $$
DECLARE
    level record;
BEGIN
    DELETE FROM candle_rollups r WHERE r.ticker = ANY(tickers)
        AND (only_levels IS NULL OR r.tf_min || '@' || r.tz = ANY(only_levels));
    FOR level IN
        SELECT * FROM candle_rollup_levels(tickers, false) l
        WHERE only_levels IS NULL OR l.tf_min || '@' || l.tz = ANY(only_levels)
        ORDER BY l.ticker, l.tf_min, l.tz
    LOOP
        INSERT INTO candle_rollups (ticker, tf_min, tz, ts, open, high, low, close, volume,
                                    openint, candles)
        SELECT level.ticker, level.tf_min, level.tz, b.*
        FROM candle_buckets(
            level.ticker, level.base_tf, level.tf_min, level.tz, '-infinity', 'infinity',
            CASE WHEN only_levels IS NULL OR level.parent_tf || '@' || level.parent_tz
                      = ANY(only_levels)
                      OR EXISTS (SELECT 1 FROM rollup_timeframes r WHERE r.ready
                                 AND r.tf_min = level.parent_tf AND r.tz = level.parent_tz)
                 THEN level.parent_tf END,
            level.parent_tz) b
        ORDER BY b.bucket;
    END LOOP;
END
$$;

-- (The functions run for every statement plan their own statements once per connection,
-- `force_generic_plan`: a custom plan made at each write cost more than the work, 3.4 ms
-- against 2.1 ms per INSERT of 10 tickers' candles, measured.)

-- The changes of one statement, applied: `delta` holds per series the rows it added and
-- removed, the span it touched and the XOR of the hashes of the rows it wrote and deleted;
-- `spans` the spans of source candles changed per series (for the rollups); `removed` the runs
-- of deleted candles. Under the tickers' locks (writers of one ticker take turns, in one
-- global order), with one new version.
CREATE OR REPLACE FUNCTION candle_apply(
    d_ticker text[], d_tf integer[], d_added bigint[], d_removed bigint[],
    d_lo timestamptz[], d_hi timestamptz[], d_sum bigint[],
    r_ticker text[], r_tf integer[], r_lo timestamptz[], r_hi timestamptz[]
) RETURNS void LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
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

-- Runs of the candles a statement deleted, given as (ticker, tf_min, ts) arrays: per series,
-- the deleted candles with no remaining candle between them.
CREATE OR REPLACE FUNCTION candle_removed_runs(tickers text[], tfs integer[], stamps timestamptz[])
RETURNS TABLE (ticker text, tf_min integer, lo timestamptz, hi timestamptz)
LANGUAGE sql STABLE AS $$
    WITH gone AS (
        SELECT * FROM unnest(tickers, tfs, stamps) g(ticker, tf_min, ts)
    ), span AS (
        SELECT g.ticker, g.tf_min, min(g.ts) AS lo, max(g.ts) AS hi FROM gone g GROUP BY 1, 2
    ), marked AS (
        SELECT u.*, count(*) FILTER (WHERE NOT u.deleted)
                        OVER (PARTITION BY u.ticker, u.tf_min ORDER BY u.ts) AS run
        FROM (
            SELECT g.ticker, g.tf_min, g.ts, true AS deleted FROM gone g
            UNION ALL
            SELECT c.ticker, c.tf_min, c.ts, false FROM span s
            JOIN candles c ON c.ticker = s.ticker AND c.tf_min = s.tf_min
                          AND c.ts > s.lo AND c.ts < s.hi
        ) u
    )
    SELECT m.ticker, m.tf_min, min(m.ts), max(m.ts) FROM marked m WHERE m.deleted
    GROUP BY m.ticker, m.tf_min, m.run
$$;

-- One trigger function for INSERT (COPY included), UPDATE and DELETE: what the statement did,
-- per series, from its transition tables (`new_rows`, `old_rows`), then `candle_apply`. An
-- updated row counts as changed when its hash did; a key that moved is removed and added. An
-- UPDATE by another program also gets what the service's own sets: each changed candle's
-- revision counted up and its transaction noted (a second UPDATE, which this trigger skips).
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
               array_agg(s.x) AS x
        INTO d
        FROM (SELECT n.ticker, n.tf_min, count(*) AS n, min(n.ts) AS lo, max(n.ts) AS hi,
                     bit_xor(candle_hash(n.ticker, n.tf_min, n.ts, n.open, n.high, n.low,
                                         n.close, n.volume, n.openint)) AS x
              FROM new_rows n GROUP BY n.ticker, n.tf_min) s;
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
        -- another program's update: its changed candles' revision and transaction
        PERFORM set_config('marketdata.fixing', 'on', true);
        UPDATE candles c SET
            revision = c.revision + CASE WHEN f.old_hash IS NULL THEN 0 ELSE 1 END,
            xact = xid
        FROM unnest(u.t, u.tf, u.ts, u.old_hash, u.new_hash, u.fix)
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
              FROM unnest(u.t, u.tf, u.ts, u.old_hash, u.new_hash)
                  AS f(ticker, tf_min, ts, old_hash, new_hash)
              GROUP BY f.ticker, f.tf_min) s;
        SELECT array_agg(g.ticker) AS t, array_agg(g.tf_min) AS tf, array_agg(g.lo) AS lo,
               array_agg(g.hi) AS hi
        INTO r
        FROM candle_removed_runs(
            ARRAY(SELECT f.t FROM unnest(u.t, u.tf, u.ts, u.new_hash) f(t, tf, ts, h)
                  WHERE f.h IS NULL ORDER BY f.t, f.tf, f.ts),
            ARRAY(SELECT f.tf FROM unnest(u.t, u.tf, u.ts, u.new_hash) f(t, tf, ts, h)
                  WHERE f.h IS NULL ORDER BY f.t, f.tf, f.ts),
            ARRAY(SELECT f.ts FROM unnest(u.t, u.tf, u.ts, u.new_hash) f(t, tf, ts, h)
                  WHERE f.h IS NULL ORDER BY f.t, f.tf, f.ts)) g;
    END IF;
    IF d.t IS NULL THEN
        RETURN NULL;  -- no row
    END IF;
    PERFORM candle_apply(d.t, d.tf, d.added, d.removed, d.lo, d.hi, d.x, r.t, r.tf, r.lo, r.hi);
    RETURN NULL;
END
$$;

-- TRUNCATE: every series is gone; every process forgets what it knew.
CREATE OR REPLACE FUNCTION candles_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    new_version bigint := nextval('candle_series_version');
BEGIN
    INSERT INTO candle_changes (ticker, tf_min, first_ts, last_ts, version, kind)
    SELECT ticker, tf_min, first_ts, last_ts, new_version, 'removed' FROM candle_series;
    DELETE FROM candle_series;
    DELETE FROM candle_rollups;
    PERFORM pg_notify('marketdata_candles',
                      json_build_object('x', pg_current_xact_id()::text::bigint,
                                        'v', new_version)::text);
    RETURN NULL;
END
$$;

-- Every series on which the catalog and the table disagree (one pass over candles): counts
-- (NULL where a side has none), and what differs. Only writes that skipped the triggers make
-- any (session_replication_role = replica, pg_restore --disable-triggers, DISABLE TRIGGER).
CREATE OR REPLACE FUNCTION candle_drift()
RETURNS TABLE (ticker text, tf_min integer, catalog_count bigint, table_count bigint, what text)
LANGUAGE sql STABLE AS $$
    WITH truth AS (
        SELECT c.ticker, c.tf_min, count(*) AS count, min(c.ts) AS first_ts,
               max(c.ts) AS last_ts,
               bit_xor(candle_hash(c.ticker, c.tf_min, c.ts, c.open, c.high, c.low, c.close,
                                   c.volume, c.openint)) AS checksum
        FROM candles c GROUP BY c.ticker, c.tf_min
    )
    SELECT coalesce(t.ticker, s.ticker), coalesce(t.tf_min, s.tf_min), s.count, t.count,
           CASE WHEN s.ticker IS NULL THEN 'not in the catalog'
                WHEN t.ticker IS NULL THEN 'no candles in the table'
                WHEN t.count <> s.count THEN 'counts differ'
                WHEN (t.first_ts, t.last_ts) <> (s.first_ts, s.last_ts) THEN 'first or last differ'
                ELSE 'candles changed' END
    FROM truth t FULL JOIN candle_series s ON s.ticker = t.ticker AND s.tf_min = t.tf_min
    WHERE t.ticker IS NULL OR s.ticker IS NULL
       OR (t.count, t.first_ts, t.last_ts, t.checksum)
          IS DISTINCT FROM (s.count, s.first_ts, s.last_ts, s.checksum)
    ORDER BY 1, 2
$$;

-- Everything the table implies for these tickers made again from it, under their locks: each
-- series' catalog row (a new version for every one, so every ETag and answer kept changes),
-- its rollups, and a `mended` change (every process forgets what it knew of them). What was
-- mended, per series.
CREATE OR REPLACE FUNCTION candle_mend(tickers text[])
RETURNS TABLE (ticker text, tf_min integer, catalog_count bigint, table_count bigint)
LANGUAGE plpgsql AS $$
DECLARE
    new_version bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(1919904876, h)
    FROM (SELECT DISTINCT hashtext(t) AS h FROM unnest(tickers) t ORDER BY 1) s;
    new_version := nextval('candle_series_version');
    CREATE TEMP TABLE IF NOT EXISTS candle_truth (
        ticker text, tf_min integer, count bigint, first_ts timestamptz, last_ts timestamptz,
        checksum bigint, agreed boolean, before bigint) ON COMMIT DROP;
    DELETE FROM candle_truth;
    INSERT INTO candle_truth
    SELECT t.*, (t.count, t.first_ts, t.last_ts, t.checksum)
                IS NOT DISTINCT FROM (s.count, s.first_ts, s.last_ts, s.checksum), s.count
    FROM (SELECT c.ticker, c.tf_min, count(*) AS count, min(c.ts) AS first_ts,
                 max(c.ts) AS last_ts,
                 bit_xor(candle_hash(c.ticker, c.tf_min, c.ts, c.open, c.high, c.low, c.close,
                                     c.volume, c.openint)) AS checksum
          FROM candles c WHERE c.ticker = ANY(tickers) GROUP BY c.ticker, c.tf_min) t
    LEFT JOIN candle_series s ON s.ticker = t.ticker AND s.tf_min = t.tf_min;
    RETURN QUERY
    WITH gone AS (
        DELETE FROM candle_series s WHERE s.ticker = ANY(tickers)
          AND NOT EXISTS (SELECT 1 FROM candle_truth t
                          WHERE t.ticker = s.ticker AND t.tf_min = s.tf_min)
        RETURNING s.ticker, s.tf_min, s.count
    ), kept AS (
        INSERT INTO candle_series AS s (ticker, tf_min, first_ts, last_ts, count, checksum,
                                        version)
        SELECT t.ticker, t.tf_min, t.first_ts, t.last_ts, t.count, t.checksum, new_version
        FROM candle_truth t ORDER BY t.ticker, t.tf_min
        ON CONFLICT ON CONSTRAINT candle_series_pkey DO UPDATE SET
            first_ts = excluded.first_ts, last_ts = excluded.last_ts, count = excluded.count,
            checksum = excluded.checksum, version = excluded.version
        RETURNING s.ticker, s.tf_min
    )
    SELECT g.ticker, g.tf_min, g.count, NULL::bigint FROM gone g
    UNION ALL
    SELECT t.ticker, t.tf_min, t.before, t.count FROM candle_truth t WHERE NOT t.agreed
    ORDER BY 1, 2;
    IF EXISTS (SELECT 1 FROM rollup_timeframes) THEN
        PERFORM candle_rollups_build(tickers);
    END IF;
    INSERT INTO candle_changes (ticker, tf_min, first_ts, last_ts, version, kind)
    SELECT s.ticker, s.tf_min, s.first_ts, s.last_ts, new_version, 'mended'
    FROM candle_series s WHERE s.ticker = ANY(tickers);
    PERFORM pg_notify('marketdata_candles',
                      CASE WHEN octet_length(array_to_json(tickers)::text) <= 6900
                           THEN json_build_object('x', pg_current_xact_id()::text::bigint,
                                                  'v', new_version, 't', tickers)
                           ELSE json_build_object('x', pg_current_xact_id()::text::bigint,
                                                  'v', new_version) END::text);
END
$$;

DROP TRIGGER IF EXISTS candles_inserted ON candles;
DROP TRIGGER IF EXISTS candles_updated ON candles;
DROP TRIGGER IF EXISTS candles_deleted ON candles;
DROP TRIGGER IF EXISTS candles_truncated ON candles;
CREATE TRIGGER candles_inserted AFTER INSERT ON candles
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION candles_changed();
CREATE TRIGGER candles_updated AFTER UPDATE ON candles
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION candles_changed();
CREATE TRIGGER candles_deleted AFTER DELETE ON candles
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION candles_changed();
CREATE TRIGGER candles_truncated AFTER TRUNCATE ON candles
    FOR EACH STATEMENT EXECUTE FUNCTION candles_truncated();

-- Existing data (a seed database, one of the previous version, rows written around the
-- service): every series gets its checksum, and those on which the catalog and the table
-- disagree are mended, each named in a NOTICE (which `marketdata migrate` prints).
DO $$
DECLARE
    drifted text[];
    m record;
BEGIN
    UPDATE candle_series s SET checksum = t.checksum
    FROM (SELECT c.ticker, c.tf_min, count(*) AS count, min(c.ts) AS first_ts,
                 max(c.ts) AS last_ts,
                 bit_xor(candle_hash(c.ticker, c.tf_min, c.ts, c.open, c.high, c.low, c.close,
                                     c.volume, c.openint)) AS checksum
          FROM candles c GROUP BY c.ticker, c.tf_min) t
    WHERE s.ticker = t.ticker AND s.tf_min = t.tf_min
      AND (s.count, s.first_ts, s.last_ts) = (t.count, t.first_ts, t.last_ts);
    drifted := ARRAY(SELECT DISTINCT d.ticker FROM candle_drift() d ORDER BY 1);
    IF cardinality(drifted) > 0 THEN
        FOR m IN SELECT * FROM candle_mend(drifted) LOOP
            RAISE NOTICE 'mended % tf_min=%: the catalog had %, the table has %', m.ticker,
                m.tf_min, coalesce(m.catalog_count::text, 'no row'),
                coalesce(m.table_count::text, 'no candles');
        END LOOP;
    END IF;
END
$$;
