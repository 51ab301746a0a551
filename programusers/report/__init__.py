"""The report request, from the job_request row to the published file (SPEC §3, §5).

A run starts at the `exhaust` command (programusers/commands/report.py), which calls
lifecycle.produce_pending once; from there it passes through these modules:
`job_request` (a row and its request_data) -> `request_store` (the job_request table: claims, outcomes,
leases) -> `lifecycle` (claim, produce through store outages, publish) -> `shards` (the sorted shards
the pipeline writes, merged into one file) -> `archive` (the password zip); `progress` shows a long
run's counts.
"""
