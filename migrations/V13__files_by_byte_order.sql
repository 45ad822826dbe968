-- Reconcile walks a bucket's listing (keys in byte order, as S3 lists them)
-- beside the files loaded from it, a page at a time: this index gives the
-- loaded files in the same order without sorting them all.
CREATE INDEX IF NOT EXISTS files_by_byte_order ON etl.files (pipeline, bucket, key COLLATE "C", version);
