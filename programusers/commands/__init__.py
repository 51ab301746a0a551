"""The command line, one module per command (ingest, replay) or group of commands (report: submit,
status, exhaust); programusers/cli.py assembles them with init, doctor and the local ones."""
