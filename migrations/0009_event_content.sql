-- What each processed event carried (its users, numbers and strings), so that `tern policy
-- simulate` can replay a changed generator on the events it would have seen. Events recorded
-- before this migration have none and are reported as not replayable.
ALTER TABLE events ADD COLUMN content jsonb;
