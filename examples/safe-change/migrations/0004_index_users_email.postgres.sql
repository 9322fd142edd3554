-- no-transaction
-- PostgreSQL: build the index without blocking writes. An interrupted build
-- leaves an INVALID index, which fleetmig drops before trying again.
CREATE INDEX CONCURRENTLY idx_users_email ON users (email);
