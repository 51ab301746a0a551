"""The worker process's shared Cassandra sessions, on the real Cassandra."""
import pytest
from conftest import LOCAL_CASSANDRA

from programusers.io import cassandra

pytestmark = pytest.mark.services


def set_up(connection):
    fn = cassandra.SessionDoFn(connection)
    fn.setup()
    return fn


def test_closing_the_shared_sessions_shuts_them_down_and_the_next_dofn_opens_a_new_one(stack):
    first = set_up(LOCAL_CASSANDRA)
    session = first._session
    assert set_up(LOCAL_CASSANDRA)._session is session  # one per connection in a process
    first.teardown()
    assert not session.cluster.is_shutdown  # Beam keeps the last one for the next DoFn

    cassandra.close_shared_sessions()
    assert session.cluster.is_shutdown
    after = set_up(LOCAL_CASSANDRA)
    assert after._session is not session and after._session.execute("SELECT release_version FROM system.local").one()
    after.teardown()
