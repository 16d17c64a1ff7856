-- How fast each user's opportunities arrive, per kind, over the last week: what every replan
-- reads for its users' pacing (`ARRIVALS_OF`). Through the primary key a probe fetched every
-- opportunity the user ever had from the heap, only to keep the last week's; through this index
-- it reads the week's entries alone, and once the table is vacuumed it need not touch the heap.
CREATE INDEX opportunities_user_created ON opportunities (user_id, created_at)
    INCLUDE (category, channels);
