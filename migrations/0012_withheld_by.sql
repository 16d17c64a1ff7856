-- Why a would-be message was not sent. Two policies leave 'counterfactual' (then 'withheld')
-- items: an experiment's holdout arm, which never sends, and the Replan's `withhold` share,
-- which withholds a random share of what it would send so that the model sees what happens
-- without a send. They differ in how likely "no send" was, which is what training weights and
-- off-policy evaluation need: certain for a holdout user (given the arm), the `withhold` share
-- for exploration (the item's `propensity`). Items sent for real leave it NULL. Items written
-- before this migration are all read as a holdout's, the only kind there was before `withhold`.
ALTER TABLE schedule_items ADD COLUMN withheld_by text
    CHECK (withheld_by IN ('holdout', 'exploration'));
UPDATE schedule_items SET withheld_by = 'holdout'
    WHERE state IN ('counterfactual', 'withheld');
-- A would-be item always says why; a real one never does (either may later be superseded,
-- cancelled or expired, and keeps what it was).
ALTER TABLE schedule_items ADD CONSTRAINT schedule_items_withheld_by_state
    CHECK ((state NOT IN ('counterfactual', 'withheld') OR withheld_by IS NOT NULL)
           AND (state NOT IN ('pending', 'leased', 'sent', 'failed', 'skipped')
                OR withheld_by IS NULL));
