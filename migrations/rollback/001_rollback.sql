-- Rollback 001: remove the initial schema. DESTROYS ALL TRADING DATA: take a backup first
-- (`python -m migrations backup`). Run by the engine (`python -m migrations down --to 0`),
-- which wraps it in a transaction with the schema_version delete; hence no BEGIN/COMMIT
-- and no DELETE FROM schema_version here. schema_version itself belongs to the engine
-- and stays.
DROP TABLE IF EXISTS market_data;
DROP TABLE IF EXISTS fills;
DROP TABLE IF EXISTS orders;
DROP TABLE IF EXISTS positions;
DROP TABLE IF EXISTS strategies;
