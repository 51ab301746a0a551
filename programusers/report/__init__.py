"""The report request, from its job_request row to the published file (SPEC §3, §5).

`programusers exhaust` (programusers/commands/report.py) resolves its flags into an ExhaustRun and calls
lifecycle.produce_pending once. For each pending request the lifecycle goes, top to bottom:
`request_store` (claim the row under a lease) -> `staging` (the request's private folder) ->
programusers/pipelines/exhaust.py (run to its end: the report rows as sorted shards, `progress` shown
meanwhile; run again after a store outage) -> `merge` (the shards into one file, zipped by `archive`) ->
`staging` (publish it whole, once `request_store` confirms the lease) -> `request_store` (record the
outcome). `job_request` is the request itself: its row, request_data and
names.
"""
