"""The report's join (SPEC §3): each requested enrollment row with the user's consent for the program and,
for consented users only, the user's cached profile; then one CSV record per row."""
import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsSingleton

from programusers import records
from programusers.crypto import PlatformCipher
from programusers.model_config import ReportConfig

# The user-cache fields records.build_record reads.
PROFILE_FIELDS = ("firstname", "lastname", "email", "phone")


def _asks_for_consent(keyed_row) -> bool:
    return bool(keyed_row[1].get("pii_consent_required"))


def _consent_active(keyed_consent) -> bool:
    return records.consent_active(keyed_consent[1])


def _asks(row) -> bool:
    return bool(row.get("pii_consent_required"))


def _with_flag(keyed_row, program_asks: bool):
    user_id, row = keyed_row
    return user_id, {**row, "pii_consent_required": program_asks}


class ApplyProgramConsentRule(beam.PTransform):
    """The PII columns follow the program, not each row: when any of the program's rows asks for consent
    (rows written before the program changed its mind may disagree), every row is treated as asking, so
    the file has one header and every row a Yes/No. `program_rows` is the program's whole partition."""

    def __init__(self, program_rows):
        super().__init__()
        self._program_rows = program_rows

    def expand(self, keyed_rows):
        program_asks = (self._program_rows
                        | "RowAsks" >> beam.Map(_asks)
                        | "AnyRowAsks" >> beam.CombineGlobally(any))
        return keyed_rows | "SameFlagForEveryRow" >> beam.Map(_with_flag, AsSingleton(program_asks))


class LookUpConsentAndProfiles(beam.PTransform):
    """(user_id, enrollment row) -> {"enrollment", "consent", "profile"}: three PCollections keyed by user.

    Consent is looked up only for rows of programs that ask for it (without it the consent columns are
    not in the file), profiles only for users whose consent is active: no PII of anyone else is read.
    The two reads are given as transforms: user ids in, (user_id, row) out.
    """

    def __init__(self, read_consent: beam.PTransform, read_profiles: beam.PTransform):
        super().__init__()
        self._read_consent, self._read_profiles = read_consent, read_profiles

    def expand(self, enrollments):
        consents = (enrollments
                    | "AskingForConsent" >> beam.Filter(_asks_for_consent)
                    | "UserIds" >> beam.Keys()
                    | "ReadConsent" >> self._read_consent)
        profiles = (consents
                    | "ActiveConsent" >> beam.Filter(_consent_active)
                    | "ConsentedUserIds" >> beam.Keys()
                    | "ReadProfiles" >> self._read_profiles)
        return {"enrollment": enrollments, "consent": consents, "profile": profiles}


class _BuildRecordFn(beam.DoFn):
    def __init__(self, config: ReportConfig):
        self._config = config
        self._records = Metrics.counter(self.__class__, "records")

    def setup(self):
        # The salt comes from the worker's environment, never through the pipeline graph.
        self._cipher = PlatformCipher.from_env()

    def process(self, joined):
        _, sides = joined
        consent = next(iter(sides["consent"]), None)
        profile = next(iter(sides["profile"]), None)
        for enrollment in sides["enrollment"]:
            record, issues = records.build_record(self._config, enrollment, consent, profile, self._cipher,
                                                  self._config.tz)
            for issue in issues:
                Metrics.counter(self.__class__, issue).inc()
            self._records.inc()
            yield record


class JoinIntoRecords(beam.PTransform):
    """{"enrollment", "consent", "profile"} keyed by user_id -> one CSV record per enrollment row."""

    def __init__(self, config: ReportConfig):
        super().__init__()
        self._config = config

    def expand(self, sides):
        return (sides
                | "JoinByUser" >> beam.CoGroupByKey()
                | "BuildRecord" >> beam.ParDo(_BuildRecordFn(self._config)))
