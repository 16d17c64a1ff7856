-- tern's schema, version 1.
--
-- Every per-user table (users, user_channels, opportunities, schedule_items, messages, outcomes)
-- has user_id as the first column of its primary key and of every unique constraint and foreign
-- key, so that each can be distributed by user_id (Citus `create_distributed_table(..., 'user_id')`)
-- or hash-partitioned by it without rewriting a key. The few global tables (plans, policy_versions,
-- models) are small and would become reference tables.
--
-- Keys (user ids, dedupe keys, channel names) are compared byte-wise (COLLATE "C"): they are
-- identifiers, not prose, and locale-aware comparison made every index insert about 40% slower.
--
-- States and kinds are text with CHECK constraints rather than enum types: adding a value to a CHECK
-- is an ordinary migration, while `ALTER TYPE ... ADD VALUE` cannot run inside a transaction.

CREATE TABLE users (
    user_id      text COLLATE "C" NOT NULL,
    -- IANA zone name, e.g. 'Europe/Stockholm'; quiet hours and send times are local to it.
    timezone     text        NOT NULL DEFAULT 'UTC',
    locale       text,
    -- Free-form attributes that segment conditions (CEL) read.
    attributes   jsonb       NOT NULL DEFAULT '{}',
    -- Categories the user opted out of, on every channel.
    opted_out_categories text[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id),
    CHECK (jsonb_typeof(attributes) = 'object')
);

-- Reachability and opt-out per user and channel. A row per channel rather than a column per
-- channel, because channels are declared by policies, not by the schema.
CREATE TABLE user_channels (
    user_id      text COLLATE "C" NOT NULL,
    channel      text COLLATE "C" NOT NULL,
    -- The channel can physically reach the user (push token present, email verified).
    reachable    boolean     NOT NULL DEFAULT true,
    -- The user said no to this channel (or an unsubscribe / push-disabled outcome said it).
    opted_out    boolean     NOT NULL DEFAULT false,
    reason       text,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, channel)
);

CREATE TABLE opportunities (
    user_id        text COLLATE "C" NOT NULL,
    -- CACHE: ingest draws ids in batches of 10,000; a cached sequence avoids a lock per row.
    opportunity_id bigint      GENERATED ALWAYS AS IDENTITY (CACHE 1000),
    dedupe_key     text COLLATE "C" NOT NULL,
    source         text        NOT NULL,
    template       text        NOT NULL,
    category       text        NOT NULL,
    priority       text        NOT NULL,
    channels       text[]      NOT NULL,
    signals        jsonb       NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    state          text        NOT NULL DEFAULT 'open',
    ingested_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, opportunity_id),
    -- Resubmitting an opportunity is a no-op: this is the idempotency key upstream retries rely on.
    UNIQUE (user_id, dedupe_key),
    CHECK (state IN ('open', 'sent', 'expired', 'cancelled')),
    CHECK (expires_at > created_at),
    CHECK (cardinality(channels) > 0)
);

-- One row per planner run. `state` moves running → published, or running → failed; a plan that
-- never published (its process died) is simply never visible to pullers.
CREATE TABLE plans (
    plan_id        bigint      GENERATED ALWAYS AS IDENTITY,
    -- The Replan policy document that triggered it, or 'manual'.
    trigger        text        NOT NULL,
    policy_version text        NOT NULL,
    model_version  text,
    seed           bigint      NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL,
    published_at   timestamptz,
    horizon_end    timestamptz NOT NULL,
    state          text        NOT NULL DEFAULT 'published',
    -- Candidates, chosen per channel, suppressed per reason, durations.
    stats          jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (plan_id),
    CHECK (state IN ('running', 'published', 'failed'))
);

CREATE TABLE schedule_items (
    user_id          text COLLATE "C" NOT NULL,
    item_id          bigint      GENERATED ALWAYS AS IDENTITY (CACHE 1000),
    plan_id          bigint      NOT NULL REFERENCES plans (plan_id),
    opportunity_id   bigint      NOT NULL,
    channel          text COLLATE "C" NOT NULL,
    -- The send window in UTC: not before send_after, not after send_before.
    send_after       timestamptz NOT NULL,
    send_before      timestamptz NOT NULL,
    value            double precision NOT NULL,
    -- The probability with which the planner chose this item, for off-policy evaluation.
    propensity       double precision NOT NULL,
    experiment       text,
    arm              text,
    -- Per-objective predictions the choice was based on.
    scores           jsonb       NOT NULL DEFAULT '{}',
    state            text        NOT NULL DEFAULT 'pending',
    lease_holder     text,
    lease_token      uuid,
    lease_expires_at timestamptz,
    -- How many times the item has been leased.
    attempt          integer     NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, item_id),
    FOREIGN KEY (user_id, opportunity_id) REFERENCES opportunities (user_id, opportunity_id),
    CHECK (state IN ('pending', 'leased', 'sent', 'failed', 'skipped', 'expired', 'cancelled', 'superseded')),
    CHECK (send_before > send_after),
    CHECK (propensity > 0 AND propensity <= 1)
);

-- The pull queue: due items per channel in send order. Partial, so it holds only live items and
-- stays small however long the history grows. Not led by user_id on purpose: it serves the
-- cross-user queue, is not unique, and so remains valid per shard (Citus) or per partition.
CREATE INDEX schedule_items_due ON schedule_items (channel, send_after)
    WHERE state IN ('pending', 'leased');

-- Finds the live items of one opportunity (publishing skips opportunities already in flight).
CREATE INDEX schedule_items_opportunity ON schedule_items (user_id, opportunity_id);

CREATE TABLE messages (
    user_id        text COLLATE "C" NOT NULL,
    message_id     bigint      GENERATED ALWAYS AS IDENTITY (CACHE 1000),
    opportunity_id bigint      NOT NULL,
    -- The schedule item it was sent from; NULL for history imported from elsewhere.
    item_id        bigint,
    channel        text COLLATE "C" NOT NULL,
    -- Copied from the opportunity so that history windows (caps) need no join.
    category       text        NOT NULL,
    priority       text        NOT NULL,
    template       text        NOT NULL,
    sent_at        timestamptz NOT NULL,
    plan_id        bigint,
    policy_version text,
    model_version  text,
    experiment     text,
    arm            text,
    propensity     double precision,
    scores         jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (user_id, message_id),
    -- A schedule item becomes at most one message, whatever the number of acks.
    UNIQUE (user_id, item_id),
    FOREIGN KEY (user_id, opportunity_id) REFERENCES opportunities (user_id, opportunity_id),
    CHECK (propensity IS NULL OR (propensity > 0 AND propensity <= 1))
);

-- History windows: a user's sends, newest first.
CREATE INDEX messages_user_sent_at ON messages (user_id, sent_at DESC);

CREATE TABLE outcomes (
    user_id     text COLLATE "C" NOT NULL,
    message_id  bigint      NOT NULL,
    kind        text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    -- E.g. the order value of a conversion.
    value       double precision,
    received_at timestamptz NOT NULL DEFAULT now(),
    -- An outcome reported twice is stored once.
    PRIMARY KEY (user_id, message_id, kind),
    FOREIGN KEY (user_id, message_id) REFERENCES messages (user_id, message_id),
    CHECK (kind IN ('delivered', 'opened', 'clicked', 'converted', 'unsubscribed',
                    'push_disabled', 'bounced', 'complained'))
);

-- Every policy bundle that was ever activated, by content hash.
CREATE TABLE policy_versions (
    version            text        NOT NULL,
    -- The canonical content the version hashes, so any plan can be explained later.
    bundle             jsonb       NOT NULL,
    first_activated_at timestamptz NOT NULL DEFAULT now(),
    last_activated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (version)
);

-- The model registry.
CREATE TABLE models (
    version          text        NOT NULL,
    feature_version  text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    train_from       timestamptz,
    train_until      timestamptz,
    metrics          jsonb       NOT NULL DEFAULT '{}',
    weights          bytea       NOT NULL,
    status           text        NOT NULL DEFAULT 'candidate',
    promoted_at      timestamptz,
    PRIMARY KEY (version),
    CHECK (status IN ('candidate', 'active', 'retired'))
);

-- At most one model serves at a time.
CREATE UNIQUE INDEX models_one_active ON models ((true)) WHERE status = 'active';
