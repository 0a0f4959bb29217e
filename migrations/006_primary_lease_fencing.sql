-- Migration 006: at most one primary, enforced by the database (issue 11 item 4).
--
-- A lease row per trading book says which node may write orders. Its epoch grows by one
-- with every new holder and is the fencing token (Kleppmann, "How to do distributed
-- locking", 2016): every write of an order, a fill or a position carries the writer's
-- epoch, and a trigger refuses it, in the same transaction, unless that epoch is the
-- current epoch of a held, unexpired lease. A node that was paused or partitioned past its
-- lease and comes back still believing it is primary therefore cannot write: its order
-- insert, or its fill (order update + fill + position, one transaction), fails and rolls
-- back as a whole.
--
-- The trigger takes the lease row FOR SHARE: a promotion (UPDATE of the lease row) waits
-- for order writes already in flight and every later write sees the new epoch, so there is
-- no moment at which both the old and the new holder can commit.
--
-- Upgrade window: until a fencing-aware node takes the lease for the first time (epoch 0),
-- writes WITHOUT an epoch (NULL, i.e. a release that predates this migration) are let
-- through, so applying 006 under a running older primary (runbook 4.1 step 2 runs the
-- migrations on green while blue trades) does not stop it. The first promotion (epoch 1)
-- fences such writers too.
--
-- Book: one book, 'primary', is all the workload uses; a second book would need a book
-- column on orders/fills/positions, which is left out until someone needs it.
--
-- No BEGIN/COMMIT and no INSERT INTO schema_version: the engine does both. Every statement
-- is safe to run again (IF NOT EXISTS, OR REPLACE, ON CONFLICT DO NOTHING).

CREATE TABLE IF NOT EXISTS trading_lease (
    book        TEXT        PRIMARY KEY,
    epoch       BIGINT      NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    holder      TEXT,                       -- node id, NULL when released
    acquired_at TIMESTAMPTZ,
    expires_at  TIMESTAMPTZ,                -- the holder must renew before this
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (holder IS NULL OR expires_at IS NOT NULL)
);

INSERT INTO trading_lease (book) VALUES ('primary') ON CONFLICT (book) DO NOTHING;

-- The epoch of the lease under which the row was last written (NULL: before 006).
ALTER TABLE orders    ADD COLUMN IF NOT EXISTS epoch BIGINT;
ALTER TABLE fills     ADD COLUMN IF NOT EXISTS epoch BIGINT;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS epoch BIGINT;

CREATE OR REPLACE FUNCTION hft_fence_write() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    l     trading_lease%ROWTYPE;
    valid BOOLEAN;
BEGIN
    -- Serialises with a promotion: it waits for us, or we see its new epoch.
    SELECT * INTO l FROM trading_lease WHERE book = 'primary' FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'fenced: no lease row for book ''primary'' in trading_lease'
            USING ERRCODE = 'HF001';
    END IF;
    -- clock_timestamp(), not now(): now() is the start of the transaction, and a long
    -- transaction must not write on a lease that expired while it ran.
    valid := l.holder IS NOT NULL AND l.expires_at > clock_timestamp();

    IF valid AND NEW.epoch = l.epoch THEN
        RETURN NEW;                                   -- the current holder
    END IF;
    IF l.epoch = 0 AND NEW.epoch IS NULL THEN
        RETURN NEW;                                   -- upgrade window, see the header
    END IF;

    -- Cancelling is allowed to a stale node, on purpose: it only reduces risk (an order
    -- that is cancelled cannot fill), and a node that has just learnt it lost the lease
    -- must be able to mark the orders it had working as cancelled so that the database
    -- does not show them working for ever. Only a pure cancellation qualifies: status
    -- new/working -> cancelled with nothing else changed but updated_at, and not of an
    -- order of the current epoch while that lease is valid (those belong to the holder).
    -- (Nested IFs: PL/pgSQL resolves OLD.status even where AND would short-circuit, and
    -- fills/positions have no status.)
    IF TG_TABLE_NAME = 'orders' AND TG_OP = 'UPDATE' THEN
        IF OLD.status IN ('new', 'working') AND NEW.status = 'cancelled'
           AND (NEW.id, NEW.client_order_id, NEW.strategy_id, NEW.exchange, NEW.symbol,
                NEW.side, NEW.quantity, NEW.price, NEW.paper, NEW.created_at, NEW.epoch)
               IS NOT DISTINCT FROM
               (OLD.id, OLD.client_order_id, OLD.strategy_id, OLD.exchange, OLD.symbol,
                OLD.side, OLD.quantity, OLD.price, OLD.paper, OLD.created_at, OLD.epoch)
           AND NOT (valid AND OLD.epoch IS NOT DISTINCT FROM l.epoch) THEN
            RETURN NEW;
        END IF;
    END IF;

    -- Positions without an epoch are an operator's correction (reconciliation, runbook 5.1
    -- step 5): allowed only while no node holds the lease, i.e. while nobody trades.
    IF TG_TABLE_NAME = 'positions' AND NEW.epoch IS NULL AND NOT valid THEN
        RETURN NEW;
    END IF;

    RAISE EXCEPTION 'fenced: % on % with epoch % refused: the lease of book ''primary'' is %',
        TG_OP, TG_TABLE_NAME, coalesce(NEW.epoch::text, 'NULL'),
        CASE WHEN l.holder IS NULL THEN format('released (epoch %s)', l.epoch)
             WHEN NOT valid THEN format('expired (holder %s, epoch %s, expired at %s)',
                                        l.holder, l.epoch, l.expires_at)
             ELSE format('held by %s with epoch %s until %s', l.holder, l.epoch, l.expires_at)
        END
        USING ERRCODE = 'HF001',
              HINT = 'only the node holding the current epoch may write; promote it first';
END
$$;

DROP TRIGGER IF EXISTS orders_fence ON orders;
CREATE TRIGGER orders_fence BEFORE INSERT OR UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION hft_fence_write();

DROP TRIGGER IF EXISTS fills_fence ON fills;
CREATE TRIGGER fills_fence BEFORE INSERT OR UPDATE ON fills
    FOR EACH ROW EXECUTE FUNCTION hft_fence_write();

DROP TRIGGER IF EXISTS positions_fence ON positions;
CREATE TRIGGER positions_fence BEFORE INSERT OR UPDATE ON positions
    FOR EACH ROW EXECUTE FUNCTION hft_fence_write();

COMMENT ON TABLE trading_lease IS
    'Primary lease per trading book; epoch is the fencing token checked on every order, fill and position write (hft-deploy migration 006)';
COMMENT ON COLUMN orders.epoch IS 'Lease epoch of the last writer (migration 006)';
