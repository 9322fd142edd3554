CREATE TABLE accounts (
    id BIGINT PRIMARY KEY,
    name VARCHAR(200) NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO accounts (id, name) VALUES (1, 'first account'), (2, 'second account'), (3, 'third account');
