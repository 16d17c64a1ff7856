-- Every change of the active model, in order: a promotion pushes a model, a rollback pops the
-- current one, so that rolling back twice steps back two models (not back and forth).
CREATE TABLE model_activations (
    id            bigserial   PRIMARY KEY,
    version       text        NOT NULL REFERENCES models (version),
    kind          text        NOT NULL CHECK (kind IN ('promote', 'rollback')),
    activated_at  timestamptz NOT NULL
);

-- The history so far, as far as it is known: each model that was ever active, promoted in the
-- order of its last promotion.
INSERT INTO model_activations (version, kind, activated_at)
SELECT version, 'promote', promoted_at FROM models
WHERE promoted_at IS NOT NULL
ORDER BY promoted_at, version;
