-- Alert notifications sent once across collectors (see
-- `crate::alerts`): the sender lease, the last state queued per rule,
-- and the outbox. Times are the server's clock, in ms.
CREATE TABLE alert_sender (
    id         integer PRIMARY KEY CHECK (id = 1),
    holder     text COLLATE "C" NOT NULL,
    expires_at bigint NOT NULL
);
CREATE TABLE alert_states (
    rule  text COLLATE "C" PRIMARY KEY,
    state text COLLATE "C" NOT NULL
);
CREATE TABLE alert_outbox (
    id        bigserial PRIMARY KEY,
    rule      text COLLATE "C" NOT NULL,
    body      text COLLATE "C" NOT NULL,
    queued_at bigint NOT NULL,
    attempts  integer NOT NULL DEFAULT 0,
    done_at   bigint,
    delivered boolean NOT NULL DEFAULT false
);
CREATE INDEX alert_outbox_pending ON alert_outbox (id) WHERE done_at IS NULL;
