"""How many worker processes a report runs on: chosen by the program's size unless the user says."""
import os

import pytest

from programusers import runners
from programusers.pipelines import exhaust


@pytest.mark.parametrize("rows, flags, processes", [
    (exhaust.ROWS_FOR_WORKER_PROCESSES - 1, [], 1),
    (exhaust.ROWS_FOR_WORKER_PROCESSES, [], os.cpu_count()),
    (10 * exhaust.ROWS_FOR_WORKER_PROCESSES, ["--worker-processes=1"], 1),
    (0, ["--worker-processes=3"], 3),
])
def test_a_large_program_runs_on_a_process_per_core_unless_the_user_says(rows, flags, processes):
    options = runners.pipeline_options("DirectRunner", flags)
    assert exhaust.worker_processes(options, exhaust.ProgramFacts(True, rows)) == processes
