-- Replans in pages, incremental replans, and replicas sharing one replan.
--
-- A full replan (a sweep) walks the users with open opportunities in pages. A page is a range of
-- buckets, a bucket being `hashtext(user_id) & 4095`: hash ranges split users evenly whatever
-- their ids look like, and every replica computes the same bucket for a user. Each page is
-- planned and published in its own transaction, so memory is bounded by a page, not by the
-- population, and replicas can plan different pages of one sweep at once.

-- The open opportunities by bucket: what a page reads, without scanning the opportunities that
-- were sent, expired or cancelled (which grow with every day of history). Also what the
-- `state = 'open'` reads of one user use.
CREATE INDEX opportunities_open_bucket ON opportunities ((hashtext(user_id) & 4095), user_id)
    WHERE state = 'open';

-- The pages of a running or finished sweep. A replica plans a page under a lease; a replica
-- that dies leaves the lease to expire and another takes the page over. Publishing a page and
-- marking it done happen in one transaction that first checks the lease is still its own, so a
-- page is published once, whoever planned it.
CREATE TABLE plan_pages (
    plan_id      bigint      NOT NULL REFERENCES plans (plan_id),
    page         integer     NOT NULL,
    -- Buckets [bucket_from, bucket_to).
    bucket_from  integer     NOT NULL,
    bucket_to    integer     NOT NULL,
    state        text        NOT NULL DEFAULT 'todo',
    holder       text,
    lease_until  timestamptz,
    -- How many times the page was claimed (above 1: a replica died or was too slow).
    claims       integer     NOT NULL DEFAULT 0,
    -- What the page did: users, candidates, chosen per channel, suppressed per reason, seconds.
    stats        jsonb,
    done_at      timestamptz,
    PRIMARY KEY (plan_id, page),
    CHECK (state IN ('todo', 'running', 'done')),
    CHECK (bucket_from >= 0 AND bucket_to <= 4096 AND bucket_from < bucket_to)
);

-- 'sweep' (paged, every user with open opportunities), 'incremental' (the users in the
-- replan queue) or 'users' (named users: manual, urgent).
ALTER TABLE plans ADD COLUMN scope text NOT NULL DEFAULT 'users';
-- At most one sweep runs at a time.
CREATE UNIQUE INDEX plans_one_running_sweep ON plans ((true))
    WHERE state = 'running' AND scope = 'sweep';

-- The users whose plan may be out of date, and from when. Every write that changes what a
-- user's plan depends on (an opportunity, an outcome, an ack, activity, preferences) appends a
-- row due now, in the same transaction; a plan that leaves a user with opportunities it did not
-- schedule appends one due when that may change (a cap window rolling over, the horizon). An
-- incremental replan plans the users with a due row and deletes the rows it read; a sweep
-- deletes the rows of the users it planned. Append-only, so writers never wait on each other.
CREATE TABLE replan_queue (
    seq     bigint      GENERATED ALWAYS AS IDENTITY,
    user_id text COLLATE "C" NOT NULL,
    due_at  timestamptz NOT NULL,
    -- What changed: opportunity, outcome, ack, activity, user, withheld, revisit.
    reason  text        NOT NULL,
    PRIMARY KEY (user_id, seq)
);
-- Not led by user_id on purpose: an incremental replan asks across users what is due.
CREATE INDEX replan_queue_due ON replan_queue (due_at);

-- The live (replaceable) items of a set of users: what publishing a page supersedes. Without
-- it, superseding a page's users reads either every pending item of every user (the due index)
-- or every item each user was ever planned (the opportunity index), both of which grow.
CREATE INDEX schedule_items_replaceable ON schedule_items (user_id)
    WHERE state IN ('pending', 'counterfactual');
