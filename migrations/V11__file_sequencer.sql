-- The S3 event sequencer of the notification an object version was loaded
-- from (hex; ordered per key after right-padding with zeros): a late
-- notification of an older version is recognised and never replaces the
-- rows of a newer one. NULL where no event said (reconcile, backfill).
ALTER TABLE etl.files ADD COLUMN IF NOT EXISTS sequencer text;
