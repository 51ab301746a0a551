"""StoreOptions: every store's connection settings, shared by both pipelines and the commands.

Each setting is a flag whose default comes from an environment variable, else the local stack
(scripts/stack), so the commands need no flag locally and take a ConfigMap's variables in a cluster.
Secrets are never flags: passwords come from files (`..._PASSWORD_FILE`, a mounted Secret) or from the
environment, read where a client is made; a Kafka properties file may hold SASL settings.
"""
from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import PipelineOptions

from programusers import settings
from programusers.io.cassandra import CassandraConnection
from programusers.io.kafka import KafkaClientConfig
from programusers.io.redis import RedisConnection


def in_range(low: float, high: float | None = None, kind: type = int):
    """An argparse type: a `kind` number from `low` to `high` (inclusive; None: no upper end), else the
    parser's own error naming the flag (exit 2)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is not in {low}..{high if high is not None else ''}")
        return value
    return parse


class StoreOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        cassandra = parser.add_argument_group("Cassandra")
        cassandra.add_argument("--cassandra-hosts", default=settings.CASSANDRA_HOSTS,
                               help="comma-separated contact points ($PROGRAMUSERS_CASSANDRA_HOSTS)")
        cassandra.add_argument("--cassandra-port", type=int,
                               default=settings.CASSANDRA_PORT)
        cassandra.add_argument("--cassandra-local-dc", default=settings.CASSANDRA_LOCAL_DC,
                               help="the datacenter to send requests to (DC-aware load balancing)")
        cassandra.add_argument("--cassandra-username", default=settings.CASSANDRA_USERNAME,
                               help="PasswordAuthenticator user; the password from --cassandra-password-file or "
                                    "$PROGRAMUSERS_CASSANDRA_PASSWORD")
        cassandra.add_argument("--cassandra-password-file", default=settings.CASSANDRA_PASSWORD_FILE)
        cassandra.add_argument("--cassandra-tls-ca", default=settings.CASSANDRA_TLS_CA,
                               help="CA file: turns TLS on, the server's certificate and host name checked")
        cassandra.add_argument("--cassandra-tls-cert", default=settings.CASSANDRA_TLS_CERT,
                               help="client certificate, when the server asks for one")
        cassandra.add_argument("--cassandra-tls-key", default=settings.CASSANDRA_TLS_KEY)
        cassandra.add_argument("--cassandra-tls-no-hostname-check", action="store_true",
                               default=settings.CASSANDRA_TLS_NO_HOSTNAME_CHECK,
                               help="check the certificate but not the host name (contact points by IP)")
        cassandra.add_argument("--cassandra-protocol-version", type=int,
                               default=settings.CASSANDRA_PROTOCOL_VERSION,
                               help="cap the native protocol (default: negotiated; 4 for Cassandra 3.11/4.x)")

        cache = parser.add_argument_group("Redis")
        cache.add_argument("--redis-host", default=settings.REDIS_HOST)
        cache.add_argument("--redis-port", type=int, default=settings.REDIS_PORT)
        cache.add_argument("--redis-db", type=int, default=settings.REDIS_DB,
                           help="default: the model config's sparkUserDbRedisIndex")
        cache.add_argument("--redis-username", default=settings.REDIS_USERNAME,
                           help="ACL user; the password from --redis-password-file or $PROGRAMUSERS_REDIS_PASSWORD")
        cache.add_argument("--redis-password-file", default=settings.REDIS_PASSWORD_FILE)
        cache.add_argument("--redis-tls-ca", default=settings.REDIS_TLS_CA,
                           help="CA file: turns TLS on")

        kafka = parser.add_argument_group("Kafka")
        kafka.add_argument("--kafka-bootstrap", default=settings.KAFKA_BOOTSTRAP,
                           help="Kafka bootstrap servers")
        kafka.add_argument("--kafka-config", action="append", default=[], metavar="KEY=VALUE",
                           help="a Kafka client property (Java names: security.protocol, sasl.mechanism, ssl.*), "
                                "repeatable; given to KafkaIO as is and translated for the Python clients")
        kafka.add_argument("--kafka-config-file", default=settings.KAFKA_CONFIG_FILE,
                           help="a Java properties file of Kafka client properties (may hold SASL secrets: "
                                "keep it 0600); --kafka-config entries override it")

    def cassandra_connection(self) -> CassandraConnection:
        return CassandraConnection(
            hosts=tuple(settings.cassandra_hosts(self.cassandra_hosts)), port=self.cassandra_port,
            local_dc=self.cassandra_local_dc, username=self.cassandra_username,
            password_file=self.cassandra_password_file, tls_ca=self.cassandra_tls_ca,
            tls_cert=self.cassandra_tls_cert, tls_key=self.cassandra_tls_key,
            tls_check_hostname=not self.cassandra_tls_no_hostname_check,
            protocol_version=self.cassandra_protocol_version)

    def redis_connection(self, default_db: int = 0) -> RedisConnection:
        return RedisConnection(host=self.redis_host, port=self.redis_port,
                               db=default_db if self.redis_db is None else self.redis_db,
                               username=self.redis_username, password_file=self.redis_password_file,
                               tls_ca=self.redis_tls_ca)

    def kafka_client(self) -> KafkaClientConfig:
        return KafkaClientConfig.load(self.kafka_bootstrap, self.kafka_config_file, self.kafka_config)


def store_flags(parser: argparse.ArgumentParser) -> None:
    """Adds StoreOptions' flags to a command's parser (for --help and validation); see from_args."""
    StoreOptions._add_argparse_args(parser)


def option_values(args: argparse.Namespace, *option_classes: type[PipelineOptions]) -> dict:
    """The values a command parsed for the flags of `option_classes` (added to its parser for --help),
    to hand on to PipelineOptions."""
    return {name: getattr(args, name) for options in option_classes
            for name in options([]).get_all_options(current_only=True)}


def from_args(args: argparse.Namespace) -> StoreOptions:
    """The StoreOptions of a command's parsed flags."""
    return StoreOptions([], **option_values(args, StoreOptions))


def keyspace_flags(parser: argparse.ArgumentParser, *, programs: bool = True, consent: bool = True,
                   programs_fallback: str | None = None) -> None:
    """--programs-keyspace and --consent-keyspace, one rule for every command: flag > environment > the
    local stack's. With `programs_fallback` (named in --help) the flag and the environment are all there
    is: an unset programs keyspace stays None for the caller to resolve (the exhaust: the model config's
    keyspace_name)."""
    if programs:
        parser.add_argument(
            "--programs-keyspace",
            default=settings.exported("PROGRAMS_KEYSPACE") if programs_fallback else settings.PROGRAMS_KEYSPACE,
            help=f"default: ${settings.variable('PROGRAMS_KEYSPACE')}, else "
                 + (programs_fallback or settings.default("PROGRAMS_KEYSPACE")))
    if consent:
        parser.add_argument("--consent-keyspace", default=settings.CONSENT_KEYSPACE,
                            help=f"default: ${settings.variable('CONSENT_KEYSPACE')}, else "
                                 + settings.default("CONSENT_KEYSPACE"))
