"""What every command-line front end shares (the core CLI and each app's cli.py): printing
tables and JSON, argument types. Above core only through btf/errors; it holds no logic."""
