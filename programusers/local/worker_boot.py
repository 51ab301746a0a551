"""What Beam's `boot` program does for an SDK worker container, for the local worker pool's workers: asks
the runner's provision service for the job's pipeline options, then runs the Python SDK worker with them.

Beam's `worker_pool_main` otherwise starts a bare `SdkHarness`, which never sees the pipeline options: its
filesystems then have no options at all (azfs:// and s3:// fail). PyPI ships no `boot`; the image's sidecar
runs the real one. Artifacts are not fetched: the pool's Python already has this project installed.

Run as the pool's `--container_executable` (see worker_pool.py) with boot's flags.
"""
from __future__ import annotations

import argparse
import os

import grpc
from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc, endpoints_pb2
from apache_beam.runners.worker import sdk_worker_main
from google.protobuf import json_format, text_format


def _descriptor(url: str) -> str:
    return text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("id", "logging_endpoint", "artifact_endpoint", "provision_endpoint", "control_endpoint"):
        parser.add_argument(f"--{flag}", default="")
    args = parser.parse_args(argv)
    with grpc.insecure_channel(args.provision_endpoint) as channel:
        info = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel).GetProvisionInfo(
            beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=[("worker_id", args.id)]).info
    os.environ.update({
        "WORKER_ID": args.id,
        "PIPELINE_OPTIONS": json_format.MessageToJson(info.pipeline_options),
        "CONTROL_API_SERVICE_DESCRIPTOR": _descriptor(info.control_endpoint.url or args.control_endpoint),
        "LOGGING_API_SERVICE_DESCRIPTOR": _descriptor(info.logging_endpoint.url or args.logging_endpoint),
        "RUNNER_CAPABILITIES": " ".join(info.runner_capabilities),
    })
    sdk_worker_main.main([])


if __name__ == "__main__":
    main()
