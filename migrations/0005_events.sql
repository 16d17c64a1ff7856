-- Events that event-triggered generators have processed, by the upstream event id, so that a
-- resubmitted event (a retry after a timeout) creates nothing twice. Global rather than per user:
-- one event concerns many users. The opportunities an event creates carry dedupe keys derived
-- from it as well, so a crash between creating them and recording the event is harmless: the
-- retry finds them as duplicates.
CREATE TABLE events (
    event_id      text COLLATE "C" NOT NULL,
    type          text        NOT NULL,
    user_count    integer     NOT NULL,
    -- Opportunities the generators created from it.
    opportunities integer     NOT NULL,
    occurred_at   timestamptz,
    received_at   timestamptz NOT NULL,
    PRIMARY KEY (event_id)
);

-- Old events can be pruned by age.
CREATE INDEX events_received_at ON events (received_at);
