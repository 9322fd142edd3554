-- The SQLite and MySQL variant of the same version (no CONCURRENTLY there).
CREATE INDEX idx_accounts_display_name ON accounts (display_name);
