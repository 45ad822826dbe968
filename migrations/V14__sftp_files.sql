-- What the SFTP source copied into its bucket: one row per pipeline and
-- remote file, the file as it was when it was copied (size, modification
-- time as the server gives it, SHA-256 of the bytes copied) and the S3
-- object version written. A pass copies a file again only when it differs
-- from its row, so a restart never copies a file twice; the row is written
-- after the object is, and a copy found in the bucket without its row (a
-- crash between the two) is adopted rather than made again.
CREATE TABLE IF NOT EXISTS etl.sftp_files (
    pipeline   text        NOT NULL,
    path       text        NOT NULL,
    size       bigint      NOT NULL,
    mtime      bigint      NOT NULL,
    digest     text        NOT NULL,
    bucket     text        NOT NULL,
    key        text        NOT NULL,
    version_id text,
    copied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, path)
);
