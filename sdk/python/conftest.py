# pytest from here finds the SDK (etl_plugin) beside this file.
