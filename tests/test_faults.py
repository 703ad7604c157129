"""The fault-injection suite: faults on the real cluster under load (issue 10 item 7).

Each fault runs under browser-like load (tests/faults.py). While any database
that can answer is up, no read fails and no client misses its own write; a
replica leaves the rotation within one INTERVAL and rejoins within two; writes
to a primary that cannot answer fail within the connect timeout.
"""

from __future__ import annotations

import pytest

from tests import faults
from tests.pgcluster import PgCluster

# A refresh is due after INTERVAL with up to 20% jitter, and waits TIMEOUT for
# its probes; the watcher looks every 5 ms.
ONE_INTERVAL = faults.INTERVAL * 1.2 + faults.TIMEOUT + 0.05
TWO_INTERVALS = 2 * faults.INTERVAL * 1.2 + faults.TIMEOUT + 0.05


@pytest.mark.parametrize("fault", faults.FAULTS, ids=lambda fault: fault.name)
def test_fault_under_load(replication: PgCluster, fault: faults.Fault) -> None:
    figures = faults.run(replication, fault)
    assert figures.reads > 100, figures
    assert figures.failed_reads == 0, figures
    assert figures.stale_reads == 0, figures
    if fault.stops_writes:
        assert figures.failed_writes > 0, figures  # the fault did reach the writers
        assert figures.slowest_failed_write is not None
        assert figures.slowest_failed_write < faults.CONNECT_TIMEOUT + 1.0, figures
        # Reads went on on the replicas meanwhile.
        assert {o.db for o in figures.outcomes if o.kind == "read"} >= set(faults.REPLICAS)
    else:
        assert figures.failed_writes == 0, figures
    if fault.excludes:
        assert figures.exclusion is not None, figures
        assert figures.exclusion <= ONE_INTERVAL, figures
        assert figures.rejoin is not None, figures
        assert figures.rejoin <= TWO_INTERVALS, figures
