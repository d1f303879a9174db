-- Where the timescaledb extension can be created, candles becomes a hypertable on ts.
-- Elsewhere (plain PostgreSQL, the embedded server) this is a no-op, recorded as applied.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
            PERFORM create_hypertable('candles', 'ts',
                                      if_not_exists => TRUE, migrate_data => TRUE);
        EXCEPTION WHEN OTHERS THEN
            -- e.g. installed but not in shared_preload_libraries
            RAISE NOTICE 'timescaledb not enabled: %', SQLERRM;
        END;
    END IF;
END
$$;
