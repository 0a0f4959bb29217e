-- Migration 004: risk limits and kill-switch audit (runbook 5.1 step 2, 8.1, 12).
--
-- The runbook's checklist asks that "limits are enforced" and "the kill switch works", and
-- its rollback procedure activates the kill switch with a reason (runbook 5.1 step 2).
-- These tables give both a durable home: limits that survive a restart or a blue-green
-- switch, and an append-only record of who stopped or resumed trading, when and why.
--
-- No BEGIN/COMMIT and no INSERT INTO schema_version: the engine does both.

-- Limits per strategy, optionally narrowed to an exchange/symbol ('*' = any).
CREATE TABLE IF NOT EXISTS risk_limits (
    strategy_id     TEXT           NOT NULL,
    exchange        TEXT           NOT NULL DEFAULT '*',
    symbol          TEXT           NOT NULL DEFAULT '*',
    max_position    NUMERIC(28,10) NOT NULL CHECK (max_position >= 0),
    max_order_qty   NUMERIC(28,10) NOT NULL CHECK (max_order_qty >= 0),
    max_daily_loss  NUMERIC(28,10) NOT NULL CHECK (max_daily_loss >= 0),
    updated_at      TIMESTAMPTZ    NOT NULL DEFAULT now(),
    updated_by      TEXT           NOT NULL DEFAULT current_user,
    PRIMARY KEY (strategy_id, exchange, symbol)
);

-- Every activation and release of the kill switch. Append-only by convention; scope is
-- 'global' or a strategy id.
CREATE TABLE IF NOT EXISTS killswitch_events (
    id        BIGSERIAL   PRIMARY KEY,
    action    TEXT        NOT NULL CHECK (action IN ('activate', 'release')),
    scope     TEXT        NOT NULL DEFAULT 'global',
    reason    TEXT        NOT NULL CHECK (length(reason) > 0),
    actor     TEXT        NOT NULL DEFAULT current_user,
    at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idx_killswitch_events_scope_at
    ON killswitch_events (scope, at DESC);

COMMENT ON TABLE risk_limits       IS 'Risk limits per strategy/instrument (hft-deploy migration 004)';
COMMENT ON TABLE killswitch_events IS 'Audit trail of kill switch activations (hft-deploy migration 004)';
