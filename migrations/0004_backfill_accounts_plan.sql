-- Backfill the new column from the invoices each account has.
UPDATE accounts SET plan = 'paid'
WHERE plan IS NULL AND id IN (SELECT account_id FROM invoices WHERE amount_cents >= 5000);
UPDATE accounts SET plan = 'free' WHERE plan IS NULL;
