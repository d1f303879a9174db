-- Time travel: each session's clock, as data (domain/sessions.py). Every instance computes
-- the same simulated present from it; a control writes a new anchor and notifies
-- `session:<id>` on the service's channel in the same transaction.
CREATE TABLE IF NOT EXISTS travel_sessions (
    id            text        PRIMARY KEY,
    start_ts      timestamptz NOT NULL,
    anchor_market timestamptz NOT NULL,
    anchor_wall   timestamptz NOT NULL,
    speed         float8      NOT NULL CHECK (speed > 0),
    paused        boolean     NOT NULL DEFAULT false,
    end_ts        timestamptz,
    tickers       text[]      NOT NULL DEFAULT '{}',
    shift         boolean     NOT NULL DEFAULT false,
    created       timestamptz NOT NULL DEFAULT now()
);
