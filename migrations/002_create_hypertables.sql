-- Migration 002: TimescaleDB hypertables for the time-series tables (runbook 3.4).
--
-- Where the timescaledb extension is installed in this database (runbook 3.4 step 1:
-- CREATE EXTENSION timescaledb, done by a superuser when the database is created), fills
-- and market_data become hypertables. Where it is not (e.g. Debian 12's archive has no
-- TimescaleDB, as in CI), they stay plain tables with the same columns, and the NOTICE
-- says which path ran. This migration does not CREATE EXTENSION: that needs a superuser,
-- and the migration role should not be one.
--
-- No BEGIN/COMMIT and no INSERT INTO schema_version: the engine does both.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable('fills', 'filled_at',
                                  chunk_time_interval => INTERVAL '1 day',
                                  if_not_exists => TRUE, migrate_data => TRUE);
        PERFORM create_hypertable('market_data', 'ts',
                                  chunk_time_interval => INTERVAL '1 hour',
                                  if_not_exists => TRUE, migrate_data => TRUE);
        RAISE NOTICE '002: TimescaleDB present: fills and market_data are hypertables';
    ELSE
        RAISE NOTICE '002: TimescaleDB not installed: fills and market_data stay plain tables';
    END IF;
END
$$;
