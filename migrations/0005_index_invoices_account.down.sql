DROP INDEX idx_invoices_account;
