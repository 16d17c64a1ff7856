-- Days on which each user was active in the product (any session, whether or not a message led
-- to it). Long-term retention, the outcome tern optimises beyond the next click, is measured
-- from these days, and the model's recency features read them.
--
-- One row per user and day rather than a timestamp per event: retention is a question about days,
-- and a day-grained table stays small (at most 365 rows per user per year) however chatty the
-- upstream reporter is. No foreign key to users: activity may arrive before the user itself does,
-- and it must not be lost for that.
CREATE TABLE user_activity (
    user_id text COLLATE "C" NOT NULL,
    day     date NOT NULL,
    PRIMARY KEY (user_id, day)
);
