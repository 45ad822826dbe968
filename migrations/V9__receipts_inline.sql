-- A ledger row holds the message ids of one 10 ms slice: about 100 ids
-- (3.7 kB) at 10,000 messages/s. Above 2 kB PostgreSQL would try to
-- compress them (random hex hardly compresses) and then move them out of
-- line: measured here, that doubled the ledger's insert time. Rows stay
-- inline and uncompressed up to a page; larger ones are still compressed
-- and, if need be, moved out.
ALTER TABLE etl.receipts SET (toast_tuple_target = 8160);
ALTER TABLE etl.receipts ALTER COLUMN message_ids SET STORAGE MAIN;
