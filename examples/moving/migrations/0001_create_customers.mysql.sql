CREATE TABLE customers (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    balance DECIMAL(12, 2) NOT NULL,
    ratio DOUBLE,
    active BOOLEAN NOT NULL,
    born DATE,
    seen_at DATETIME(6),
    paid_at TIMESTAMP(6) NULL,
    profile JSON,
    avatar BLOB,
    external_id CHAR(36)
);
CREATE TABLE orders (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    customer_id BIGINT NOT NULL,
    total DECIMAL(12, 2) NOT NULL,
    FOREIGN KEY (customer_id) REFERENCES customers (id)
);
