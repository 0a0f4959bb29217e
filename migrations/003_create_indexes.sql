-- hft:no-transaction
-- Migration 003: indexes for the workload's queries (runbook 3.4, 6.3 item 8).
--
-- The directive on the first line tells the engine to run this file OUTSIDE a transaction,
-- one statement at a time, because CREATE INDEX CONCURRENTLY cannot run inside one. The
-- engine drops any INVALID index a failed concurrent build leaves behind, and records the
-- schema_version row only after every statement succeeded; so every statement here must be
-- safe to run twice (IF NOT EXISTS).
--
-- Plain tables (orders, positions, strategies) get CONCURRENTLY so writers are never blocked.
-- fills and market_data may be TimescaleDB hypertables (002), which do not support
-- CREATE INDEX CONCURRENTLY; they get an ordinary CREATE INDEX (each statement commits on
-- its own, and on a fresh deployment these tables are empty).
--
-- No BEGIN/COMMIT and no INSERT INTO schema_version: the engine does both.

-- Open orders of a strategy: what the order manager and the kill switch look up.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_orders_open
    ON orders (strategy_id, status)
    WHERE status IN ('new', 'working');

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_orders_strategy_created
    ON orders (strategy_id, created_at DESC);

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_orders_instrument
    ON orders (exchange, symbol, created_at DESC);

CREATE INDEX IF NOT EXISTS idx_fills_order
    ON fills (order_id);

CREATE INDEX IF NOT EXISTS idx_fills_strategy_time
    ON fills (strategy_id, filled_at DESC);

CREATE INDEX IF NOT EXISTS idx_market_data_instrument_time
    ON market_data (exchange, symbol, ts DESC);
