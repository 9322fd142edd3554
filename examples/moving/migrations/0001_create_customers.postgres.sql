CREATE TABLE customers (
    id BIGSERIAL PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    balance NUMERIC(12, 2) NOT NULL,
    ratio DOUBLE PRECISION,
    active BOOLEAN NOT NULL,
    born DATE,
    seen_at TIMESTAMP,
    paid_at TIMESTAMPTZ,
    profile JSONB,
    avatar BYTEA,
    external_id UUID
);
CREATE TABLE orders (
    id BIGSERIAL PRIMARY KEY,
    customer_id BIGINT NOT NULL REFERENCES customers (id),
    total NUMERIC(12, 2) NOT NULL
);
