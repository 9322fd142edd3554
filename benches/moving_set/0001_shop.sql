CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL, email VARCHAR(200) NOT NULL, created_at TIMESTAMP NOT NULL, balance NUMERIC(12,2) NOT NULL);
CREATE TABLE products (id INTEGER PRIMARY KEY, sku VARCHAR(40) NOT NULL, title VARCHAR(200) NOT NULL, price NUMERIC(10,2) NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers (id), created_at TIMESTAMP NOT NULL, status VARCHAR(20) NOT NULL, total NUMERIC(12,2) NOT NULL);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE TABLE order_items (order_id INTEGER NOT NULL REFERENCES orders (id), line INTEGER NOT NULL, product_id INTEGER NOT NULL REFERENCES products (id), qty INTEGER NOT NULL, price NUMERIC(10,2) NOT NULL, PRIMARY KEY (order_id, line));
CREATE INDEX items_product ON order_items (product_id);
