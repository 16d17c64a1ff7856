-- `replan_runs` has recorded every cron firing claimed, scheduled generators' and training's
-- as well as replans'; it is named for what it holds. `job` is the job's key: a Replan
-- document's name, `generator/NAME` or `train`. Renames keep the rows and the constraints.
ALTER TABLE replan_runs RENAME TO cron_runs;
ALTER TABLE cron_runs RENAME COLUMN replan TO job;
ALTER TABLE cron_runs RENAME CONSTRAINT replan_runs_pkey TO cron_runs_pkey;
ALTER TABLE cron_runs RENAME CONSTRAINT replan_runs_plan_id_fkey TO cron_runs_plan_id_fkey;
