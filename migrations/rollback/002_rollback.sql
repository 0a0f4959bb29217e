-- Rollback 002: deliberately leaves hypertables in place.
--
-- Turning a hypertable back into a plain table means copying every row into a new table
-- under an exclusive lock, on the busiest tables of a trading database: worse than the
-- problem a rollback is meant to fix. A hypertable has the same columns as the plain table,
-- so the schema at version 1 is functionally the same, and re-applying 002 is harmless
-- (create_hypertable ... if_not_exists). To really remove the data use 001's rollback
-- or restore a backup (runbook 5.2).
-- No BEGIN/COMMIT and no DELETE FROM schema_version: the engine does both.
DO $$
BEGIN
    RAISE NOTICE 'rollback 002: hypertables (if any) are kept; nothing to do';
END
$$;
