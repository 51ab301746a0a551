"""`programusers init`: the Cassandra keyspaces/tables and the PostgreSQL job_request table (SPEC §1).

Every statement is IF NOT EXISTS, so init is safe to run any number of times.
"""
# The tables' names, here only: every query and message takes them from here.
ENROLLMENT_TABLE = "program_enrollment"
CONSENT_TABLE = "user_consent"
JOB_REQUEST_TABLE = "job_request"  # the default; PROGRAMUSERS_JOB_REQUEST_TABLE or --job-request-table
ERR_MESSAGE_WIDTH = 300  # job_request.err_message's characters: every stored error is cut to them

# Table options as in the design note.
_ENROLLMENT_DDL = """
CREATE TABLE IF NOT EXISTS {ks}.{table} (
  program_id text, program_externalId text, program_name text, pii_consent_required boolean,
  user_id text, user_locations map<text,text>, organisation_id text, organisation_name text,
  user_sub_type text, user_type text, created_at date, updated_at date,
  PRIMARY KEY (program_id, user_id))
WITH bloom_filter_fp_chance = 0.01
  AND caching = {{'keys': 'ALL', 'rows_per_partition': 'NONE'}}
  AND compaction = {{'class': 'org.apache.cassandra.db.compaction.SizeTieredCompactionStrategy',
                    'max_threshold': '32', 'min_threshold': '4'}}
  AND compression = {{'chunk_length_in_kb': '64', 'class': 'org.apache.cassandra.io.compress.LZ4Compressor'}}
  AND crc_check_chance = 1.0
  AND default_time_to_live = 0
  AND gc_grace_seconds = 864000
  AND max_index_interval = 2048
  AND memtable_flush_period_in_ms = 0
  AND min_index_interval = 128
  AND speculative_retry = '99PERCENTILE'
"""

_CONSENT_DDL = """
CREATE TABLE IF NOT EXISTS {ks}.{table} (
  id text, user_id text, consumer_id text, consumer_type text, object_id text, object_type text,
  status text, expiry timestamp, categories list<text>, consent_data text,
  created_on timestamp, last_updated_on timestamp,
  PRIMARY KEY (user_id, consumer_id, object_id))
"""

_JOB_REQUEST_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
  tag varchar(100), request_id varchar(50), job_id varchar(50), status varchar(50),
  request_data json, requested_by varchar(50), requested_channel varchar(50),
  dt_job_submitted timestamp, download_urls text[], dt_file_created timestamp,
  dt_job_completed timestamp, execution_time integer, err_message varchar({err_width}),
  iteration integer, encryption_key varchar(50), batch_number integer, processed_batches text,
  PRIMARY KEY (tag, request_id))
"""


# The request API's list reads a tag's jobs of one requester, newest first.
_JOB_REQUEST_INDEX = "CREATE INDEX IF NOT EXISTS {index} ON {table} (tag, requested_by, dt_job_submitted DESC)"

# Every signed link the request API hands out: who, which request, which channel, when, from where, until
# when; never the link or the key.
LINK_AUDIT_TABLE = "report_link_audit"
_LINK_AUDIT_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
  id bigserial PRIMARY KEY, handed_at timestamptz NOT NULL, user_id varchar(100) NOT NULL,
  request_id varchar(50) NOT NULL, tag varchar(100) NOT NULL, channel varchar(50) NOT NULL,
  client_address varchar(64), expires_at timestamptz NOT NULL)
"""
_LINK_AUDIT_INDEX = "CREATE INDEX IF NOT EXISTS {index} ON {table} (request_id, handed_at)"


def cassandra_statements(programs_keyspace: str, consent_keyspace: str, replication: str) -> list[str]:
    from programusers.io.cassandra import identifier  # the names above stay importable without the driver

    programs, consent = identifier(programs_keyspace, "keyspace"), identifier(consent_keyspace, "keyspace")
    statements = [f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {replication}"
                  for ks in dict.fromkeys([programs, consent])]
    return statements + [_ENROLLMENT_DDL.format(ks=programs, table=ENROLLMENT_TABLE),
                         _CONSENT_DDL.format(ks=consent, table=CONSENT_TABLE)]


def init_cassandra(session, programs_keyspace: str, consent_keyspace: str, replication: str) -> None:
    for statement in cassandra_statements(programs_keyspace, consent_keyspace, replication):
        session.execute(statement, timeout=120)


def init_postgres(connection, table: str, audit_table: str = LINK_AUDIT_TABLE) -> None:
    from psycopg2 import sql

    with connection, connection.cursor() as cursor:
        for ddl, name in ((_JOB_REQUEST_DDL, table), (_JOB_REQUEST_INDEX, table), (_LINK_AUDIT_DDL, audit_table),
                          (_LINK_AUDIT_INDEX, audit_table)):
            cursor.execute(sql.SQL(ddl).format(table=sql.Identifier(name), index=sql.Identifier(f"{name}_lookup"),
                                               err_width=sql.SQL(str(ERR_MESSAGE_WIDTH))))
