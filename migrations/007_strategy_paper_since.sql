-- Migration 007: when a strategy entered paper mode (runbook 7.2 steps 4-6).
--
-- Runbook 7.2 runs a new strategy in paper trading for 24 hours before it may trade live.
-- hft-deploy's Strategy step enforces that wait from the workload's own record, not from
-- deployment config: this column. The workload sets it when a strategy is loaded in paper
-- or switched from live to paper, keeps it while the strategy stays in paper (restarts,
-- start/stop), sets it to NULL when the strategy goes live or is unloaded, and reports it in
-- GET /api/v1/strategies[/{id}] as `paper_since`.
--
-- Existing rows keep NULL: when a strategy entered paper before this migration is not
-- known, and the workload starts the record at its next write of the row (the wait is never
-- shortened by a guess). Adding a nullable column without a default is a catalog change
-- only (no table rewrite, no full scan).
--
-- No BEGIN/COMMIT and no INSERT INTO schema_version: the engine does both. Every statement
-- is safe to run again.
ALTER TABLE strategies ADD COLUMN IF NOT EXISTS paper_since TIMESTAMPTZ;

COMMENT ON COLUMN strategies.paper_since IS
    'When the strategy entered paper mode; NULL when live or unloaded (hft-deploy migration 007)';
