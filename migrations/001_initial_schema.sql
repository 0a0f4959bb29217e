-- Migration 001: initial schema (runbook 3.4 step 2, workload contract)
--
-- Run by the migration engine: `python -m migrations up`. Unlike the runbook's examples
-- this file has NO BEGIN/COMMIT and NO INSERT INTO schema_version: the engine wraps each
-- migration in one transaction together with its schema_version row (and owns that table).
-- The column lists are a contract with the C++ reference workload: change them only with
-- a new migration agreed with its owner.

-- Strategy catalogue: paper_trading defaults to true so a new strategy never trades live
-- by accident (runbook 8.1: paper trading initially).
CREATE TABLE IF NOT EXISTS strategies (
    id            TEXT        PRIMARY KEY,
    name          TEXT        NOT NULL,
    config        JSONB       NOT NULL DEFAULT '{}',
    enabled       BOOLEAN     NOT NULL DEFAULT false,
    paper_trading BOOLEAN     NOT NULL DEFAULT true,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One net position per instrument and venue; reconciled against the exchanges (runbook 4.2).
CREATE TABLE IF NOT EXISTS positions (
    exchange   TEXT           NOT NULL,
    symbol     TEXT           NOT NULL,
    quantity   NUMERIC(28,10) NOT NULL DEFAULT 0,
    avg_price  NUMERIC(28,10) NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ    NOT NULL DEFAULT now(),
    PRIMARY KEY (exchange, symbol)
);

-- Orders. client_order_id is unique so a resent order after a failover is not doubled.
-- strategy_id has no foreign key on purpose: orders must be recorded even for a strategy
-- row that was removed or not yet loaded.
CREATE TABLE IF NOT EXISTS orders (
    id              BIGSERIAL      PRIMARY KEY,
    client_order_id TEXT           NOT NULL UNIQUE,
    strategy_id     TEXT,
    exchange        TEXT           NOT NULL,
    symbol          TEXT           NOT NULL,
    side            TEXT           NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity        NUMERIC(28,10) NOT NULL,
    price           NUMERIC(28,10) NOT NULL,
    status          TEXT           NOT NULL
                    CHECK (status IN ('new', 'working', 'filled', 'cancelled', 'rejected')),
    paper           BOOLEAN        NOT NULL DEFAULT false,
    created_at      TIMESTAMPTZ    NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ    NOT NULL DEFAULT now()
);

-- Fills. The primary key includes filled_at because 002 may turn this table into a
-- TimescaleDB hypertable partitioned on filled_at, and every unique index of a hypertable
-- must contain the partitioning column. No foreign key to orders: TimescaleDB does not
-- support foreign keys *to* hypertables and we keep both paths identical.
CREATE TABLE IF NOT EXISTS fills (
    id          BIGSERIAL,
    order_id    BIGINT         NOT NULL,
    strategy_id TEXT,
    exchange    TEXT           NOT NULL,
    symbol      TEXT           NOT NULL,
    side        TEXT           NOT NULL CHECK (side IN ('buy', 'sell')),
    quantity    NUMERIC(28,10) NOT NULL,
    price       NUMERIC(28,10) NOT NULL,
    paper       BOOLEAN        NOT NULL DEFAULT false,
    filled_at   TIMESTAMPTZ    NOT NULL DEFAULT now(),
    PRIMARY KEY (id, filled_at)
);

-- Market data snapshots; hypertable on ts where TimescaleDB is installed (002).
-- No primary key: feeds may legitimately deliver two ticks with the same timestamp.
CREATE TABLE IF NOT EXISTS market_data (
    exchange TEXT           NOT NULL,
    symbol   TEXT           NOT NULL,
    ts       TIMESTAMPTZ    NOT NULL,
    bid      NUMERIC(28,10),
    ask      NUMERIC(28,10),
    last     NUMERIC(28,10),
    volume   NUMERIC(28,10)
);

COMMENT ON TABLE strategies  IS 'Trading strategies and their configuration (hft-deploy migration 001)';
COMMENT ON TABLE positions   IS 'Net position per exchange and symbol (hft-deploy migration 001)';
COMMENT ON TABLE orders      IS 'Orders sent by strategies (hft-deploy migration 001)';
COMMENT ON TABLE fills       IS 'Executions; hypertable on filled_at where TimescaleDB exists (001, 002)';
COMMENT ON TABLE market_data IS 'Market data snapshots; hypertable on ts where TimescaleDB exists (001, 002)';
