-- Logical replication into `candles` (a SUBSCRIPTION from the user's feed database), kept
-- as every other writer is. PostgreSQL's apply worker fires row triggers only, and only those
-- enabled for replication (ENABLE REPLICA or ALWAYS): the statement triggers never see its
-- changes. A row trigger enabled for replication does, in a replication worker only: each row
-- it changes is noted (`candle_pending`), and at the commit of the replicated transaction a
-- deferred trigger on that table (never truncated: a deferred event on `candles` would point
-- into a heap a TRUNCATE in the same transaction replaced) applies them all at once, as a
-- statement's changed rows are applied (`candle_changes_apply`, 0010). Where PostgreSQL
-- applies as the table's owner in a security-restricted operation (16 and later, a
-- subscription owned by another role without run_as_owner), which refuses deferred
-- triggers, each row is applied at once instead. A replicated TRUNCATE fires
-- `candles_truncated`, now ENABLE ALWAYS, which also drops what the transaction noted before
-- it. A session that sets session_replication_role = replica itself still skips the
-- triggers (`marketdata check` finds what it wrote).

-- The rows a replicated transaction changed, until its commit applies them (then deleted, in
-- the same transaction: nothing here outlives one, so nothing is logged).
CREATE UNLOGGED TABLE IF NOT EXISTS candle_pending (
    xid      xid8        NOT NULL DEFAULT pg_current_xact_id(),
    seq      bigint      GENERATED ALWAYS AS IDENTITY,
    ticker   text        NOT NULL,
    tf_min   integer     NOT NULL,
    ts       timestamptz NOT NULL,
    old_hash bigint,               -- its values before (NULL: it was not)
    new_hash bigint,               -- after (NULL: it is no more)
    xact     xid8                  -- the transaction mark the row has now
);
CREATE INDEX IF NOT EXISTS candle_pending_xid ON candle_pending (xid);

-- Rows a replication worker changed (keys, hashes before and after, marks): noted for the
-- commit, or applied at once (`now`). Runs as its owner: the worker's role may not write the
-- tables the triggers keep; so it refuses any other caller (it is not a trigger function).
CREATE OR REPLACE FUNCTION candle_replicated_rows(
    k_ticker text[], k_tf integer[], k_ts timestamptz[], k_old bigint[], k_new bigint[],
    k_xact xid8[], now boolean
) RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_stat_subscription s WHERE s.pid = pg_backend_pid()) THEN
        RAISE EXCEPTION 'candle_replicated_rows is for logical replication workers only';
    END IF;
    IF now THEN
        PERFORM candle_changes_apply(
            k_ticker, k_tf, k_ts, k_old, k_new,
            ARRAY(SELECT x IS DISTINCT FROM pg_current_xact_id() FROM unnest(k_xact) x));
    ELSE
        INSERT INTO candle_pending (ticker, tf_min, ts, old_hash, new_hash, xact)
        SELECT * FROM unnest(k_ticker, k_tf, k_ts, k_old, k_new, k_xact);
    END IF;
END
$$;

-- The row trigger (replication workers only; a session of another kind with
-- session_replication_role = replica passes). Not SECURITY DEFINER: it tells whether the
-- worker runs as the table's owner in a security-restricted operation (its current user is
-- not its session's), where PostgreSQL refuses deferred triggers.
CREATE OR REPLACE FUNCTION candles_replicated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    now boolean;
    o bigint;
    n bigint;
BEGIN
    IF current_setting('marketdata.fixing', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF coalesce(current_setting('marketdata.replicating', true), '') = '' THEN
        PERFORM set_config('marketdata.replicating',
                           CASE WHEN EXISTS (SELECT 1 FROM pg_stat_subscription s
                                             WHERE s.pid = pg_backend_pid())
                                THEN 'yes' ELSE 'no' END, true);
    END IF;
    IF current_setting('marketdata.replicating') <> 'yes' THEN
        RETURN NULL;
    END IF;
    now := current_user <> session_user;
    IF TG_OP <> 'INSERT' THEN
        o := candle_hash(OLD.ticker, OLD.tf_min, OLD.ts, OLD.open, OLD.high, OLD.low,
                         OLD.close, OLD.volume, OLD.openint);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        n := candle_hash(NEW.ticker, NEW.tf_min, NEW.ts, NEW.open, NEW.high, NEW.low,
                         NEW.close, NEW.volume, NEW.openint);
    END IF;
    IF TG_OP = 'UPDATE' AND (OLD.ticker, OLD.tf_min, OLD.ts) = (NEW.ticker, NEW.tf_min, NEW.ts)
       AND o = n THEN
        RETURN NULL;  -- no value changed (as `candles_changed` skips such rows)
    ELSIF TG_OP = 'UPDATE' AND (OLD.ticker, OLD.tf_min, OLD.ts) = (NEW.ticker, NEW.tf_min, NEW.ts)
    THEN
        PERFORM candle_replicated_rows(ARRAY[NEW.ticker], ARRAY[NEW.tf_min], ARRAY[NEW.ts],
                                       ARRAY[o], ARRAY[n], ARRAY[NEW.xact], now);
    ELSIF TG_OP = 'UPDATE' THEN  -- a key that moved: removed, then added
        PERFORM candle_replicated_rows(ARRAY[OLD.ticker, NEW.ticker],
                                       ARRAY[OLD.tf_min, NEW.tf_min], ARRAY[OLD.ts, NEW.ts],
                                       ARRAY[o, NULL], ARRAY[NULL, n],
                                       ARRAY[NULL, NEW.xact]::xid8[], now);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM candle_replicated_rows(ARRAY[OLD.ticker], ARRAY[OLD.tf_min], ARRAY[OLD.ts],
                                       ARRAY[o], ARRAY[NULL::bigint], ARRAY[NULL::xid8], now);
    ELSE
        PERFORM candle_replicated_rows(ARRAY[NEW.ticker], ARRAY[NEW.tf_min], ARRAY[NEW.ts],
                                       ARRAY[NULL::bigint], ARRAY[n], ARRAY[NEW.xact], now);
    END IF;
    RETURN NULL;
END
$$;

-- At the commit (deferred, once per row noted): the first applies every row the transaction
-- noted, each key once (its values before the transaction and after it); the others find
-- nothing left.
CREATE OR REPLACE FUNCTION candle_pending_commit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    xid xid8 := pg_current_xact_id();
    u record;
BEGIN
    IF current_setting('marketdata.committing', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('marketdata.committing', 'on', true);
    WITH taken AS (
        DELETE FROM candle_pending p WHERE p.xid = pg_current_xact_id() RETURNING p.*
    ), net AS (
        SELECT k.ticker, k.tf_min, k.ts,
               (array_agg(k.old_hash ORDER BY k.seq))[1] AS old_hash,
               (array_agg(k.new_hash ORDER BY k.seq DESC))[1] AS new_hash,
               (array_agg(k.xact ORDER BY k.seq DESC))[1] AS xact
        FROM taken k GROUP BY k.ticker, k.tf_min, k.ts
    )
    SELECT array_agg(n.ticker) AS t, array_agg(n.tf_min) AS tf, array_agg(n.ts) AS ts,
           array_agg(n.old_hash) AS old_hash, array_agg(n.new_hash) AS new_hash,
           array_agg(n.xact IS DISTINCT FROM xid) AS fix
    INTO u
    FROM net n WHERE n.old_hash IS DISTINCT FROM n.new_hash;
    IF u.t IS NOT NULL THEN
        PERFORM candle_changes_apply(u.t, u.tf, u.ts, u.old_hash, u.new_hash, u.fix);
    END IF;
    RETURN NULL;
END
$$;

-- `candles_truncated` as in 0006, and what the transaction noted before it dropped.
CREATE OR REPLACE FUNCTION candles_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    new_version bigint := nextval('candle_series_version');
BEGIN
    INSERT INTO candle_changes (ticker, tf_min, first_ts, last_ts, version, kind)
    SELECT ticker, tf_min, first_ts, last_ts, new_version, 'removed' FROM candle_series;
    DELETE FROM candle_series;
    DELETE FROM candle_rollups;
    DELETE FROM candle_pending WHERE xid = pg_current_xact_id();
    PERFORM pg_notify('marketdata_candles',
                      json_build_object('x', pg_current_xact_id()::text::bigint,
                                        'v', new_version)::text);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS candles_replicated ON candles;
CREATE TRIGGER candles_replicated AFTER INSERT OR UPDATE OR DELETE ON candles
    FOR EACH ROW EXECUTE FUNCTION candles_replicated();
ALTER TABLE candles ENABLE REPLICA TRIGGER candles_replicated;
DROP TRIGGER IF EXISTS candle_pending_commit ON candle_pending;
CREATE CONSTRAINT TRIGGER candle_pending_commit AFTER INSERT ON candle_pending
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION candle_pending_commit();
ALTER TABLE candle_pending ENABLE ALWAYS TRIGGER candle_pending_commit;
ALTER TABLE candles ENABLE ALWAYS TRIGGER candles_truncated;

-- As 0010 did: the trigger functions of `candles` run as their owner (but the replication
-- row trigger, above), and every function that runs statements looks names up in the schema
-- of `candles`, then pg_temp (`candles_truncated` was made again).
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
          AND p.proname IN ('candles_truncated', 'candle_replicated_rows',
                            'candles_replicated', 'candle_pending_commit')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f.signature, home);
        IF f.proname IN ('candles_truncated', 'candle_pending_commit') THEN
            EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER', f.signature);
        END IF;
    END LOOP;
END
$$;
