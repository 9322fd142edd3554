-- no-transaction
-- PostgreSQL: build the index without blocking writes. An interrupted build
-- leaves an INVALID index, which fleetmig drops before the next attempt.
CREATE INDEX CONCURRENTLY idx_accounts_display_name ON accounts (display_name);
