-- Rollback 004 (the runbook 5.2 example): remove risk limits and the kill-switch audit.
-- Their rows are lost: take a backup first. No BEGIN/COMMIT and no DELETE FROM
-- schema_version: the engine does both.
DROP TABLE IF EXISTS killswitch_events;
DROP TABLE IF EXISTS risk_limits;
