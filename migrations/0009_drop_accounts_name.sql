-- Contract: held until every tenant has 0001-0008 and the operator passes
-- --allow-contract (the application no longer reads accounts.name).
-- Verified by 0009_drop_accounts_name.verify.sql inside this migration's
-- transaction, before it commits.
-- fleetmig: phase=contract
ALTER TABLE accounts DROP COLUMN name;
