-- Rollback 005 (runbook 6.1): remove the strategy metrics table and its data.
-- No BEGIN/COMMIT and no DELETE FROM schema_version: the engine does both.
DROP TABLE IF EXISTS strategy_metrics CASCADE;
