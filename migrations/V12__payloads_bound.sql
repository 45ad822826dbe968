-- A payload sealed bound to its dead letter (AES-GCM associated data: its
-- id), so that it opens on its own row only. Payloads sealed before are
-- not.
ALTER TABLE etl.dead_letter_payloads ADD COLUMN IF NOT EXISTS bound boolean NOT NULL DEFAULT false;
