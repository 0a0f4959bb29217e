-- Migration 005: strategy metrics table (runbook 6.1, as written there).
--
-- Differences from the runbook's example, on purpose: no BEGIN/COMMIT and no
-- INSERT INTO schema_version (the engine does both, in one transaction), and the
-- hypertable is created only where TimescaleDB is installed (a plain table otherwise,
-- which the NOTICE reports), as in 002.
CREATE TABLE IF NOT EXISTS strategy_metrics (
    strategy_id  VARCHAR(255)     NOT NULL,
    timestamp    TIMESTAMPTZ      NOT NULL,
    metric_name  VARCHAR(255)     NOT NULL,
    metric_value DOUBLE PRECISION,
    PRIMARY KEY (strategy_id, timestamp, metric_name)
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable('strategy_metrics', 'timestamp',
                                  chunk_time_interval => INTERVAL '1 day',
                                  if_not_exists => TRUE);
        RAISE NOTICE '005: TimescaleDB present: strategy_metrics is a hypertable';
    ELSE
        RAISE NOTICE '005: TimescaleDB not installed: strategy_metrics is a plain table';
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS idx_strategy_metrics_id_time
    ON strategy_metrics (strategy_id, timestamp DESC);
