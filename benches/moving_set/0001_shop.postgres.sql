CREATE TABLE customers (id bigserial PRIMARY KEY, name varchar(100) NOT NULL, email varchar(200) NOT NULL, created_at timestamp NOT NULL, balance numeric(12,2) NOT NULL);
CREATE TABLE products (id bigserial PRIMARY KEY, sku varchar(40) NOT NULL, title varchar(200) NOT NULL, price numeric(10,2) NOT NULL);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers (id), created_at timestamp NOT NULL, status varchar(20) NOT NULL, total numeric(12,2) NOT NULL);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE TABLE order_items (order_id bigint NOT NULL REFERENCES orders (id), line int NOT NULL, product_id bigint NOT NULL REFERENCES products (id), qty int NOT NULL, price numeric(10,2) NOT NULL, PRIMARY KEY (order_id, line));
CREATE INDEX items_product ON order_items (product_id);
