check errors/plugin-missing.toml
