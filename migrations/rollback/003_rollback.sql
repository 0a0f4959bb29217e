-- hft:no-transaction
-- Rollback 003: drop the indexes of 003. DROP INDEX CONCURRENTLY does not block writers,
-- so this runs outside a transaction (the directive above); the engine deletes the
-- schema_version row after the last statement. No BEGIN/COMMIT here.
DROP INDEX CONCURRENTLY IF EXISTS idx_orders_open;
DROP INDEX CONCURRENTLY IF EXISTS idx_orders_strategy_created;
DROP INDEX CONCURRENTLY IF EXISTS idx_orders_instrument;
DROP INDEX IF EXISTS idx_fills_order;
DROP INDEX IF EXISTS idx_fills_strategy_time;
DROP INDEX IF EXISTS idx_market_data_instrument_time;
