-- Rollback 006: remove the primary lease and the fencing triggers. After this the database
-- no longer stops a second primary: stop every node but one first. The epoch columns go
-- too (their values are only meaningful with the lease). No BEGIN/COMMIT and no DELETE FROM
-- schema_version: the engine does both.
DROP TRIGGER IF EXISTS positions_fence ON positions;
DROP TRIGGER IF EXISTS fills_fence ON fills;
DROP TRIGGER IF EXISTS orders_fence ON orders;
DROP FUNCTION IF EXISTS hft_fence_write();
ALTER TABLE positions DROP COLUMN IF EXISTS epoch;
ALTER TABLE fills     DROP COLUMN IF EXISTS epoch;
ALTER TABLE orders    DROP COLUMN IF EXISTS epoch;
DROP TABLE IF EXISTS trading_lease;
