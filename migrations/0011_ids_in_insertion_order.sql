-- Identity values in insertion order. With CACHE 1000 every pooled connection drew its own block
-- of ids, so which ids a batch got depended on which connection served it: replaying the same
-- inputs (the simulator, a test) numbered opportunities, schedule items and messages differently
-- from run to run. Ids order a user's opportunities for the planner, break ties between
-- candidates of equal value and between messages sent at the same instant in training, and key
-- the random draws of `withhold`; all of that must follow the inputs, not the connection pool.
-- A sequence still logs to WAL once per 32 values, as before; only the per-session block goes.
ALTER TABLE opportunities ALTER COLUMN opportunity_id SET CACHE 1;
ALTER TABLE schedule_items ALTER COLUMN item_id SET CACHE 1;
ALTER TABLE messages ALTER COLUMN message_id SET CACHE 1;
