"""The report's join (SPEC §3): each requested enrollment row with the user's consent for the program and,
for consented users only, the user's cached profile; then one CSV record per row.

The PII columns follow the program, not each row: when any of the program's rows asks for consent (rows
written before the program changed its mind may disagree), every row is treated as asking, so the file
has one header and every row a Yes/No. That program-wide flag (ProgramAsksForConsent) is a side input,
and it is read only where the runner breaks fusion anyway or where elements are small (user ids): a
side input on the rows themselves would make the runner write every row out once more and wait.
"""
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsSingleton

from programusers import records
from programusers.crypto import PlatformCipher
from programusers.model_config import ReportConfig

# The user-cache fields records.build_record reads.
PROFILE_FIELDS = ("firstname", "lastname", "email", "phone")
ENROLLMENT, CONSENT, PROFILE = "enrollment", "consent", "profile"


def _asks(row) -> bool:
    return bool(row.get("pii_consent_required"))


def _consent_active(keyed_consent) -> bool:
    return records.consent_active(keyed_consent[1])


def _if_program_asks(user_id: str, program_asks: bool) -> bool:
    return program_asks


class ProgramAsksForConsent(beam.PTransform):
    """The program's rows (its whole partition) -> one bool: whether any of them asks for consent."""

    def expand(self, program_rows):
        return (program_rows
                | "RowAsks" >> beam.Map(_asks)
                | "AnyRowAsks" >> beam.CombineGlobally(any))


class LookUpConsentAndProfiles(beam.PTransform):
    """(user_id, enrollment row) -> {"enrollment", "consent", "profile"}: three PCollections keyed by user.

    Consent is looked up only when the program asks for it (`program_asks`, see ProgramAsksForConsent;
    without it the consent columns are not in the file), profiles only for users whose consent is active:
    no PII of anyone else is read. The two reads are given as transforms: user ids in, (user_id, row) out.
    """

    def __init__(self, read_consent: beam.PTransform, read_profiles: beam.PTransform, program_asks):
        super().__init__()
        self._read_consent, self._read_profiles, self._program_asks = read_consent, read_profiles, program_asks

    def expand(self, enrollments):
        consents = (enrollments
                    | "UserIds" >> beam.Keys()
                    | "IfProgramAsks" >> beam.Filter(_if_program_asks, AsSingleton(self._program_asks))
                    | "ReadConsent" >> self._read_consent)
        profiles = (consents
                    | "ActiveConsent" >> beam.Filter(_consent_active)
                    | "ConsentedUserIds" >> beam.Keys()
                    | "ReadProfiles" >> self._read_profiles)
        return {ENROLLMENT: enrollments, CONSENT: consents, PROFILE: profiles}


class _BuildRecordFn(beam.DoFn):
    """(user_id, [(side, value)]) -> (sort key, CSV line) per enrollment row. The record leaves as one
    string: cheaper for the runner to encode and to sort than a dict of cells."""

    def __init__(self, config: ReportConfig):
        self._config = config
        self._records = Metrics.counter(self.__class__, "records")

    def setup(self):
        # The salt comes from the worker's environment, never through the pipeline graph.
        self._cipher = PlatformCipher.from_env()

    def process(self, joined, program_asks: bool):
        _, tagged = joined
        enrollments, found = [], {}
        for side, value in tagged:
            if side == ENROLLMENT:
                enrollments.append(value)
            else:
                found[side] = value
        for enrollment in enrollments:
            record, issues = records.build_record(
                self._config, {**enrollment, "pii_consent_required": program_asks}, found.get(CONSENT),
                found.get(PROFILE), self._cipher, self._config.tz)
            for issue in issues:
                Metrics.counter(self.__class__, issue).inc()
            self._records.inc()
            yield records.sort_key(self._config, record), records.csv_line(record.values())


def _tagged(keyed_value, side: str):
    key, value = keyed_value
    return key, (side, value)


class JoinIntoRecords(beam.PTransform):
    """{"enrollment", "consent", "profile"} keyed by user_id -> one (sort key, CSV line) per enrollment row,
    its cells in the order of records.header(program_asks).

    A CoGroupByKey of its own: the three sides are tagged with one element type, so the runner can have
    each write straight into the grouping (Beam's CoGroupByKey infers a type per side, and FnApiRunner then
    writes every element out once more to flatten them)."""

    def __init__(self, config: ReportConfig, program_asks):
        super().__init__()
        self._config, self._program_asks = config, program_asks

    def expand(self, sides):
        tagged = [pcoll | f"Tag[{side}]" >> beam.Map(_tagged, side).with_output_types(tuple[str, tuple[str, Any]])
                  for side, pcoll in sides.items()]
        return (tagged
                | "Flatten" >> beam.Flatten()
                | "JoinByUser" >> beam.GroupByKey()
                | "BuildRecord" >> beam.ParDo(_BuildRecordFn(self._config), AsSingleton(self._program_asks)))
