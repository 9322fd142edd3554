-- A row every new tenant starts with. A moved tenant's target gets it from
-- this migration too, and then the source's own rows replace it.
INSERT INTO customers (id, name, balance, active, profile, external_id)
VALUES (1, 'house account', 0.00, TRUE, '{"house": true}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11');
