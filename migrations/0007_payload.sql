-- What a sender must render: each opportunity carries its template's parameters (a release id,
-- an order number) as a JSON object of strings, handed out with its leased items. tern stores
-- and returns the payload and never reads it. A constant default makes this instant on a large
-- table (no rewrite); rows stored before it have an empty payload.
ALTER TABLE opportunities ADD COLUMN payload jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE opportunities ADD CONSTRAINT opportunities_payload_object
    CHECK (jsonb_typeof(payload) = 'object');
