"""The report's records (SPEC §3): each requested enrollment row with the user's consent for the program
and, for consented users only, the user's cached profile; then one CSV record per row.

The PII columns follow the program, not each row: when any of the program's rows asks for consent (rows
written before the program changed its mind may disagree), every row is treated as asking, so the file
has one header and every row a Yes/No. That program-wide flag (`program_asks`) is decided before the
pipeline (program_reads.program_asks_for_consent) and given here as a value: as a side input computed
from the rows it would make the runner hold every row until all were read.
"""
import contextlib

import apache_beam as beam
from apache_beam.metrics import Metrics

from programusers import records
from programusers.crypto import PlatformCipher
from programusers.io.lookups import LookupHandler
from programusers.model_config import ReportConfig
from programusers.report import progress


class _LookUpAndBuildFn(beam.DoFn):
    """A batch of requested enrollment rows -> [(sort key, CSV line)] of the batch.

    A user has one row per program, so no join is needed: the batch's users' consent is looked up in one
    go, then the profiles of those whose consent is active, with the two lookup handlers this DoFn owns
    (io/lookups.py: a list of user ids in, {user_id: found} out). A record leaves as one string, cheaper
    for the runner to encode and to sort than a dict of cells. Counts the records and their issues."""

    def __init__(self, config: ReportConfig, program_asks: bool, consent_handler: LookupHandler,
                 profile_handler: LookupHandler):
        self._config, self._program_asks = config, program_asks
        self._handlers = (consent_handler, profile_handler)
        # A long report shows its progress in these.
        self._records = progress.counter(self.__class__, "records")
        self._consents_found = progress.counter(self.__class__, "consents_found")
        self._profiles_found = progress.counter(self.__class__, "profiles_found")

    def setup(self):
        # The salt comes from the worker's environment, never through the pipeline graph.
        self._cipher = PlatformCipher.from_env()
        self._open = contextlib.ExitStack()
        if self._program_asks:  # else the file has no consent columns: nothing personal is read
            self._consents, self._profiles = (self._open.enter_context(handler) for handler in self._handlers)

    def _keyed_line(self, enrollment, consent, profile) -> tuple[tuple[str, ...], str]:
        record, issues = records.build_record(self._config, {**enrollment, "pii_consent_required": self._program_asks},
                                              consent, profile, self._cipher, self._config.tz)
        for issue in issues:
            Metrics.counter(self.__class__, issue).inc()
        self._records.inc()
        return records.sort_key(self._config, record), records.csv_line(record.values())

    def process(self, rows: list[dict]):
        consents, profiles = {}, {}
        if self._program_asks:
            consents = self._consents([row["user_id"] for row in rows])
            profiles = self._profiles([user_id for user_id, consent in consents.items()
                                       if records.consent_active(consent)])
            self._consents_found.inc(len(consents))
            self._profiles_found.inc(len(profiles))
        yield [self._keyed_line(row, consents.get(row["user_id"]), profiles.get(row["user_id"])) for row in rows]

    def teardown(self):
        if opened := getattr(self, "_open", None):  # setup may have failed before opening
            opened.close()


class LookUpAndBuildRecords(beam.PTransform):
    """Requested enrollment rows -> lists of (sort key, CSV line), `batch_size` rows a list, so the runner
    moves a few thousand lists, not a million rows. The handlers look up a batch's consents and its
    consenting users' profiles (read only when `program_asks`)."""

    def __init__(self, config: ReportConfig, program_asks: bool, consent_handler: LookupHandler,
                 profile_handler: LookupHandler, batch_size: int):
        super().__init__()
        self._fn = _LookUpAndBuildFn(config, program_asks, consent_handler, profile_handler)
        self._batch_size = batch_size

    def expand(self, rows):
        return (rows
                | "Batch" >> beam.BatchElements(min_batch_size=self._batch_size, max_batch_size=self._batch_size)
                | "LookUpAndBuild" >> beam.ParDo(self._fn))
