"""The report's rows (SPEC §3): each requested enrollment row with the user's consent for the program
and, for consented users only, the user's cached profile; then one report row (a CSV line) per enrollment row.

The PII columns follow the program, not each row: when any of the program's rows asks for consent (rows
written before the program changed its mind may disagree), every row is treated as asking, so the file
has one header and every row a Yes/No. That program-wide flag (`asks_for_consent`) is decided before the
pipeline (program_reads.program_asks_for_consent) and given here as a value: as a side input computed
from the rows it would make the runner hold every row until all were read.
"""
import contextlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import BoundedWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from programusers import report_rows
from programusers.crypto import PlatformCipher
from programusers.io.lookups import LookupHandler
from programusers.model_config import ReportConfig
from programusers.report import tally


class _LookedUp(NamedTuple):
    """A batch whose lookups were started."""
    rows: list[dict]
    lookups: Future  # of (consents, profiles)
    window: BoundedWindow
    timestamp: Timestamp


class _LookUpAndBuildFn(beam.DoFn):
    """A batch of requested enrollment rows -> [(sort key, CSV line)] of the batch.

    A user has one row per program, so no join is needed: the batch's users' consent is looked up in one
    go, then the profiles of those whose consent is active, with the two lookup handlers this DoFn owns
    (io/lookups.py: a list of user ids in, {user_id: found} out). The lookups of a batch run on a thread
    of their own while the report rows of the batch before are built: they mostly wait on the stores. A
    report row leaves as one string, cheaper for the runner to encode and to sort than a dict of cells.
    Counts the report rows and their issues (on the bundle's thread, where Beam's metrics are kept)."""

    def __init__(self, config: ReportConfig, asks_for_consent: bool, consent_handler: LookupHandler,
                 profile_handler: LookupHandler):
        self._config, self._asks_for_consent = config, asks_for_consent
        self._handlers = (consent_handler, profile_handler)
        # A long report shows its progress in these.
        self._report_rows_built = tally.counter(self.__class__, "report_rows_built")
        self._consents_found = tally.counter(self.__class__, "consents_found")
        self._profiles_found = tally.counter(self.__class__, "profiles_found")

    def setup(self):
        # The salt comes from the worker's environment, never through the pipeline graph.
        self._cipher = PlatformCipher.from_env()
        self._open = contextlib.ExitStack()
        if self._asks_for_consent:  # else the file has no consent columns: nothing personal is read
            self._consents, self._profiles = (self._open.enter_context(handler) for handler in self._handlers)
            self._lookups = self._open.enter_context(ThreadPoolExecutor(1, thread_name_prefix="lookups"))

    def start_bundle(self):
        self._pending = None  # the batch looked up last

    def _keyed_line(self, enrollment, consent, profile) -> tuple[tuple[str, ...], str]:
        report_row, issues = report_rows.build_report_row(
            self._config, enrollment, asks_for_consent=self._asks_for_consent, consent=consent, profile=profile,
            cipher=self._cipher)
        for issue in issues:
            Metrics.counter(self.__class__, issue).inc()
        return report_rows.sort_key(self._config, report_row), report_rows.csv_line(report_row.values())

    def _look_up(self, rows: list[dict]) -> tuple[dict, dict]:
        consents = self._consents([row["user_id"] for row in rows])
        return consents, self._profiles([user_id for user_id, consent in consents.items()
                                         if report_rows.consent_active(consent)])

    def _keyed_lines(self, rows: list[dict], consents: dict, profiles: dict) -> list:
        lines = [self._keyed_line(row, consents.get(row["user_id"]), profiles.get(row["user_id"])) for row in rows]
        self._report_rows_built.inc(len(lines))
        return lines

    def _built(self, batch: _LookedUp) -> WindowedValue:
        consents, profiles = batch.lookups.result()
        self._consents.count_throttled()
        self._profiles.count_throttled()
        self._consents_found.inc(len(consents))
        self._profiles_found.inc(len(profiles))
        return WindowedValue(self._keyed_lines(batch.rows, consents, profiles), batch.timestamp, [batch.window])

    def process(self, rows, window=beam.DoFn.WindowParam, timestamp=beam.DoFn.TimestampParam):
        # `rows`: a list of dicts, a programusers.io.pages.Page in the report (not annotated: Beam's type
        # check would take a Page for another type than list).
        if not self._asks_for_consent:
            yield self._keyed_lines(rows, {}, {})
            return
        before, self._pending = self._pending, _LookedUp(rows, self._lookups.submit(self._look_up, rows), window,
                                                         timestamp)
        if before:
            yield self._built(before)

    def finish_bundle(self):
        if self._pending:
            last, self._pending = self._pending, None
            yield self._built(last)

    def teardown(self):
        if opened := getattr(self, "_open", None):  # setup may have failed before opening
            opened.close()


class LookUpAndBuildReportRows(beam.PTransform):
    """Lists of requested enrollment rows (a page read each) -> a list of (sort key, CSV line) per list, so
    the runner moves a few thousand lists, not a million rows. Each list is a batch of lookups: the handlers
    look up its consents and its consenting users' profiles (read only when `asks_for_consent`)."""

    def __init__(self, config: ReportConfig, asks_for_consent: bool, consent_handler: LookupHandler,
                 profile_handler: LookupHandler):
        super().__init__()
        self._fn = _LookUpAndBuildFn(config, asks_for_consent, consent_handler, profile_handler)

    def expand(self, row_lists):
        return row_lists | "LookUpAndBuild" >> beam.ParDo(self._fn)
