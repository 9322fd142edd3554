-- Every kind of value fleetmig carries between systems: integers, decimals,
-- floats, text, booleans, dates, timestamps with and without a zone, JSON,
-- bytes and UUIDs (SQLite spelling; .postgres.sql and .mysql.sql beside).
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    balance NUMERIC(12, 2) NOT NULL,
    ratio REAL,
    active BOOLEAN NOT NULL,
    born DATE,
    seen_at TIMESTAMP,
    paid_at TIMESTAMPTZ,
    profile JSON,
    avatar BLOB,
    external_id UUID
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (id),
    total NUMERIC(12, 2) NOT NULL
);
