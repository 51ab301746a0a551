"""PostgreSQL access for the job_request table."""
import psycopg2


def connect(dsn: str):
    return psycopg2.connect(dsn)
