-- Experiments: who was in which arm, and what holdout users would have been sent.

-- Every plan records the arm of each user it planned, in every experiment the user is in,
-- holdout users included, so that a report counts the users an arm sent nothing to and compares
-- arms over the same population. One row per experiment and user: the first plan that put the
-- user in the experiment starts its observation period.
CREATE TABLE experiment_assignments (
    experiment       text COLLATE "C" NOT NULL,
    user_id          text COLLATE "C" NOT NULL,
    arm              text COLLATE "C" NOT NULL,
    -- The policy version of the plan that last wrote the row (a change of arm, or the daily
    -- refresh of last_planned_at).
    policy_version   text        NOT NULL,
    first_planned_at timestamptz NOT NULL,
    last_planned_at  timestamptz NOT NULL,
    -- How many times a later plan put the user in another arm (a share, salt or layer changed):
    -- such users saw both arms, and a report counts them apart.
    arm_changes      integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (experiment, user_id)
);

-- A holdout user's plan keeps what the policy would have sent as 'counterfactual' items, which
-- no puller sees. Once such an item's send window opens, it becomes 'withheld' and so does its
-- opportunity: the counterfactual message was "sent" then, exactly when a real one would have
-- been pulled, and a later plan does not choose it again.
ALTER TABLE schedule_items DROP CONSTRAINT schedule_items_state_check;
ALTER TABLE schedule_items ADD CONSTRAINT schedule_items_state_check
    CHECK (state IN ('pending', 'leased', 'sent', 'failed', 'skipped', 'expired', 'cancelled',
                     'superseded', 'counterfactual', 'withheld'));
ALTER TABLE opportunities DROP CONSTRAINT opportunities_state_check;
ALTER TABLE opportunities ADD CONSTRAINT opportunities_state_check
    CHECK (state IN ('open', 'sent', 'expired', 'cancelled', 'withheld'));

CREATE INDEX schedule_items_counterfactual ON schedule_items (send_after)
    WHERE state = 'counterfactual';
-- A holdout user's would-be history (planning) and would-be messages (reports), without
-- scanning the superseded items that every replan leaves behind.
CREATE INDEX schedule_items_withheld ON schedule_items (user_id, send_after)
    WHERE state = 'withheld';
