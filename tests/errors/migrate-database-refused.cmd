DATABASE_URL=postgres://postgres@127.0.0.1:1/postgres migrate ../pipelines/logins.toml
