"""Pages travel as one element with their own coder: they round-trip, and their size is estimated
without encoding them whole."""
from datetime import date

import apache_beam as beam
from apache_beam import coders
from hypothesis import given
from hypothesis import strategies as st

from programusers.io.pages import Page, PageCoder

ROWS = st.lists(st.fixed_dictionaries({"user_id": st.text(), "created_at": st.none() | st.dates(),
                                       "user_locations": st.none() | st.dictionaries(st.text(), st.text())}))


@given(ROWS)
def test_a_page_round_trips(rows):
    coder = PageCoder()
    decoded = coder.decode(coder.encode(Page(rows)))
    assert isinstance(decoded, Page) and decoded == rows


def test_a_page_is_estimated_from_its_first_row():
    row = {"user_id": "u" * 36, "created_at": date(2024, 1, 1), "user_locations": {"state_name": "Karnataka"}}
    one, thousand = PageCoder().estimate_size(Page([row])), PageCoder().estimate_size(Page([row] * 1000))
    assert thousand == 1000 * one
    assert PageCoder().estimate_size(Page()) > 0


def test_a_step_declared_to_output_pages_uses_the_page_coder():
    pages = beam.Pipeline() | beam.Create([[1, 2]]) | beam.Map(Page).with_output_types(Page)  # built, not run
    assert isinstance(coders.registry.get_coder(pages.element_type), PageCoder)
