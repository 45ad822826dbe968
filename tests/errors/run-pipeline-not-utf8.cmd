run errors/not-utf8.toml
