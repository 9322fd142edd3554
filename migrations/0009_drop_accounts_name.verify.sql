-- Must return no rows: every account kept its name as display_name.
SELECT id FROM accounts WHERE display_name IS NULL OR display_name = ''
