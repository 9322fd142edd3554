CREATE INDEX idx_invoices_account ON invoices (account_id);
