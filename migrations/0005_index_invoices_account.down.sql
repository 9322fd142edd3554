-- fleetmig-lint: ignore FM001 (see the up migration)
DROP INDEX idx_invoices_account;
