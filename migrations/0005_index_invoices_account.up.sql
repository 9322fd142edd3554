-- fleetmig-lint: ignore FM001 (invoices is at most a few thousand rows per tenant; see README: on a big table use a .postgres variant with CREATE INDEX CONCURRENTLY)
CREATE INDEX idx_invoices_account ON invoices (account_id);
