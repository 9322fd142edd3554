CREATE TABLE invoices (
    id BIGINT PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    amount_cents BIGINT NOT NULL,
    issued_on DATE NOT NULL
);
INSERT INTO invoices (id, account_id, amount_cents, issued_on) VALUES
    (1, 1, 1200, '2026-01-31'), (2, 1, 1200, '2026-02-28'), (3, 2, 9900, '2026-02-28');
