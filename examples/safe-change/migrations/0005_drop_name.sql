-- Contract: held until every tenant of the fleet has 0001-0004 and the
-- operator passes --allow-contract (the application no longer reads `name`).
-- Verified: 0005_drop_name.verify.sql runs inside this migration's
-- transaction before it commits.
-- fleetmig: phase=contract
ALTER TABLE users DROP COLUMN name;
