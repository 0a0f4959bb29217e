-- Rollback 007: drop the paper-mode record. The Strategy step then cannot tell how long a
-- strategy has been in paper and refuses every paper -> live switch; a workload that knows
-- the column logs once that it is missing and keeps saving strategies without it.
-- No BEGIN/COMMIT and no DELETE FROM schema_version: the engine does both.
ALTER TABLE strategies DROP COLUMN IF EXISTS paper_since;
