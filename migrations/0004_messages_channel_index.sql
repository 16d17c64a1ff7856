-- Channel budgets are quotas across all users ("2,000,000 pushes a day"): before each plan the
-- daemon counts what each budgeted channel has already sent in the budget's window. Like
-- schedule_items_due, this index is not led by user_id on purpose: it serves a cross-user count,
-- is not unique, and stays valid per shard or per partition.
CREATE INDEX messages_channel_sent_at ON messages (channel, sent_at);
