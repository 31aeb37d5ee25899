-- Plan violations ever counted (flagged or rejected), beside accepted and
-- rejected: the alert on the violation rate takes deltas of these totals
-- (see alerts/rules.rs). quality_counts is pruned, so its sum cannot be
-- a cumulative total.
ALTER TABLE counters ADD COLUMN plan_violations INTEGER NOT NULL DEFAULT 0;
