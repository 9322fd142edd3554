-- SQLite and MySQL variant of the same version (no CONCURRENTLY there).
CREATE INDEX idx_users_email ON users (email);
