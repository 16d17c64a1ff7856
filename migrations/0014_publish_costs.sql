-- Costs of replans that grew with the population or with history, measured at 100,000 users and
-- in the demo (docs/benchmarks.md, "Replans at scale").

-- The items delivery services hold now, per channel. A plan counts them against the channel's
-- budget, on every page of a full replan; without this index the count read every pending item
-- of the channel through `schedule_items_due` to keep the few leased ones (131 ms per page,
-- 6,696 heap pages for 106,964 pending items). Leased items are few at any moment, so the index
-- stays small.
--
-- Its predicate names `lease_holder IS NOT NULL` (true of every leased item: a lease names its
-- holder), which no other statement says, so that only the count can use it. With
-- `state = 'leased'` alone, a batch ack (`state = 'leased'`, joined to its keys) read every
-- leased item through it for each key of the batch instead of looking the key up; on statistics
-- that say few items are leased while a backlog holds many, that is the quadratic plan the
-- publish once had. (A predicate on `lease_token` would not do: the ack's `lease_token = x.tok`
-- implies it.)
CREATE INDEX schedule_items_leased ON schedule_items (channel)
    WHERE state = 'leased' AND lease_holder IS NOT NULL;

-- The foreign keys of schedule items. Their checks ran as a trigger per inserted item, each
-- locking the item's opportunity and plan rows: 16,176 items took 564 ms to insert with them and
-- 108 ms without, most of a page's publish. They guarded nothing the publish does not check
-- itself: it inserts an item only when a probe in the same statement finds its opportunity open,
-- under the plan row it created or claimed in the same transaction, and tern never deletes an
-- opportunity or a plan (`every_item_names_an_opportunity_and_a_plan_that_exist` checks that
-- every item's opportunity and plan exist after plans, leases, acks and expiry).
ALTER TABLE schedule_items DROP CONSTRAINT schedule_items_plan_id_fkey;
ALTER TABLE schedule_items DROP CONSTRAINT schedule_items_user_id_opportunity_id_fkey;

-- The live items of an opportunity. Every replan supersedes its users' pending items and writes
-- new ones, so the items of an open opportunity pile up, superseded, one or more per replan; the
-- probes by `(user_id, opportunity_id)` (publishing, the open-opportunity read, a user's leased
-- items) only ever ask for live states, yet read every superseded item through the full index:
-- 197,927 entries for the leased items of one incremental replan's users on the tenth simulated
-- day of the demo. Each of those statements names its states, which imply this predicate.
DROP INDEX schedule_items_opportunity;
CREATE INDEX schedule_items_opportunity ON schedule_items (user_id, opportunity_id)
    WHERE state IN ('pending', 'leased', 'sent', 'counterfactual', 'withheld');
