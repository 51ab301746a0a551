"""The report's join (SPEC §3): each requested enrollment row with the user's consent for the program and,
for consented users only, the user's cached profile; then one CSV record per row.

The PII columns follow the program, not each row: when any of the program's rows asks for consent (rows
written before the program changed its mind may disagree), every row is treated as asking, so the file
has one header and every row a Yes/No. That program-wide flag (`program_asks`) is decided before the
pipeline (program_reads.program_asks_for_consent) and given to these transforms as a value: as a side
input computed from the rows it would make the runner hold every row until all were read.
"""
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from programusers import progress, records
from programusers.crypto import PlatformCipher
from programusers.model_config import ReportConfig

# The user-cache fields records.build_record reads.
PROFILE_FIELDS = ("firstname", "lastname", "email", "phone")
ENROLLMENT, CONSENT, PROFILE = "enrollment", "consent", "profile"


def _consent_active(keyed_consent) -> bool:
    return records.consent_active(keyed_consent[1])


class LookUpConsentAndProfiles(beam.PTransform):
    """(user_id, enrollment row) -> {"enrollment", "consent", "profile"}: three PCollections keyed by user.

    Consent is looked up only when the program asks for it (without it the consent columns are not in the
    file), profiles only for users whose consent is active: no PII of anyone else is read. The two reads
    are given as transforms: user ids in, (user_id, row) out.
    """

    def __init__(self, read_consent: beam.PTransform, read_profiles: beam.PTransform, program_asks: bool):
        super().__init__()
        self._read_consent, self._read_profiles, self._program_asks = read_consent, read_profiles, program_asks

    def expand(self, enrollments):
        if not self._program_asks:
            nothing = enrollments.pipeline | "NoConsentAsked" >> beam.Create([])
            return {ENROLLMENT: enrollments, CONSENT: nothing, PROFILE: nothing}
        consents = (enrollments
                    | "UserIds" >> beam.Keys()
                    | "ReadConsent" >> self._read_consent)
        profiles = (consents
                    | "ActiveConsent" >> beam.Filter(_consent_active)
                    | "ConsentedUserIds" >> beam.Keys()
                    | "ReadProfiles" >> self._read_profiles)
        return {ENROLLMENT: enrollments, CONSENT: consents, PROFILE: profiles}


class _RecordFn(beam.DoFn):
    """Builds records as (sort key, CSV line): the record leaves as one string, cheaper for the runner to
    encode and to sort than a dict of cells. Counts the records and their issues."""

    def __init__(self, config: ReportConfig, program_asks: bool):
        self._config, self._program_asks = config, program_asks
        self._records = progress.counter(self.__class__, "records")  # a long report shows its progress

    def setup(self):
        # The salt comes from the worker's environment, never through the pipeline graph.
        self._cipher = PlatformCipher.from_env()

    def _keyed_line(self, enrollment, consent, profile) -> tuple[tuple[str, ...], str]:
        record, issues = records.build_record(self._config, {**enrollment, "pii_consent_required": self._program_asks},
                                              consent, profile, self._cipher, self._config.tz)
        for issue in issues:
            Metrics.counter(self.__class__, issue).inc()
        self._records.inc()
        return records.sort_key(self._config, record), records.csv_line(record.values())


class _BuildRecordFn(_RecordFn):
    """(user_id, [(side, value)]) -> [(sort key, CSV line)] of the user's enrollment rows."""

    def process(self, joined):
        _, tagged = joined
        enrollments, found = [], {}
        for side, value in tagged:
            if side == ENROLLMENT:
                enrollments.append(value)
            else:
                found[side] = value
        yield [self._keyed_line(enrollment, found.get(CONSENT), found.get(PROFILE)) for enrollment in enrollments]


class _LookUpAndBuildFn(_RecordFn):
    """A batch of requested enrollment rows -> [(sort key, CSV line)] of the batch.

    A user has one row per program, so no join is needed: the batch's users' consent is looked up in one
    go, then the profiles of those whose consent is active, with the given batch-lookup DoFns (process:
    a list of user ids in, (user_id, row) out for the users found)."""

    def __init__(self, config: ReportConfig, program_asks: bool, consent_lookup: beam.DoFn,
                 profile_lookup: beam.DoFn):
        super().__init__(config, program_asks)
        self._lookups = (consent_lookup, profile_lookup)

    def setup(self):
        super().setup()
        for lookup in self._lookups:
            lookup.setup()

    def process(self, rows: list[dict]):
        consents, profiles = {}, {}
        if self._program_asks:  # else the file has no consent columns: nothing personal is read
            consent_lookup, profile_lookup = self._lookups
            consents = dict(consent_lookup.process([row["user_id"] for row in rows]))
            profiles = dict(profile_lookup.process(
                [user_id for user_id, consent in consents.items() if records.consent_active(consent)]))
        yield [self._keyed_line(row, consents.get(row["user_id"]), profiles.get(row["user_id"])) for row in rows]

    def teardown(self):
        for lookup in self._lookups:
            lookup.teardown()


class LookUpAndBuildRecords(beam.PTransform):
    """Requested enrollment rows -> lists of (sort key, CSV line), `batch_size` rows a list: the default
    per-user lookups without a join, so the runner moves a few hundred lists instead of every row three
    times (LookUpConsentAndProfiles + JoinIntoRecords do the same through a CoGroupByKey, for reads that
    are not per user, such as the consent scan)."""

    def __init__(self, config: ReportConfig, program_asks: bool, consent_lookup: beam.DoFn,
                 profile_lookup: beam.DoFn, batch_size: int):
        super().__init__()
        self._fn = _LookUpAndBuildFn(config, program_asks, consent_lookup, profile_lookup)
        self._batch_size = batch_size

    def expand(self, rows):
        return (rows
                | "Batch" >> beam.BatchElements(min_batch_size=self._batch_size, max_batch_size=self._batch_size)
                | "LookUpAndBuild" >> beam.ParDo(self._fn))


def _tagged(keyed_value, side: str):
    key, value = keyed_value
    return key, (side, value)


class JoinIntoRecords(beam.PTransform):
    """{"enrollment", "consent", "profile"} keyed by user_id -> lists of (sort key, CSV line), one list per
    user, its cells in the order of records.header(program_asks).

    A CoGroupByKey of its own: the three sides are tagged with one element type, so the runner can have
    each write straight into the grouping (Beam's CoGroupByKey infers a type per side, and FnApiRunner then
    writes every element out once more to flatten them)."""

    def __init__(self, config: ReportConfig, program_asks: bool):
        super().__init__()
        self._fn = _BuildRecordFn(config, program_asks)

    def expand(self, sides):
        tagged = [pcoll | f"Tag[{side}]" >> beam.Map(_tagged, side).with_output_types(tuple[str, tuple[str, Any]])
                  for side, pcoll in sides.items()]
        return (tagged
                | "Flatten" >> beam.Flatten()
                | "JoinByUser" >> beam.GroupByKey()
                | "BuildRecord" >> beam.ParDo(self._fn))
