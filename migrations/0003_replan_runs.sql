-- Which scheduled replan runs have been claimed, so that several replicas run each cron firing
-- exactly once: the first replica to insert (replan, scheduled_for) runs it, the others see the
-- conflict and skip it. A replica that claimed a run and died leaves the row without a plan_id;
-- the firing is not retried (the next firing plans everything anyway).
CREATE TABLE replan_runs (
    -- The Replan policy document's name.
    replan        text        NOT NULL,
    -- The cron firing this run stands for (after a downtime: the latest missed one).
    scheduled_for timestamptz NOT NULL,
    claimed_by    text        NOT NULL,
    claimed_at    timestamptz NOT NULL,
    plan_id       bigint      REFERENCES plans (plan_id),
    PRIMARY KEY (replan, scheduled_for)
);
