"""testinfra suites for the cdnlab roles, per role, runnable against any inventory, real hosts
included::

    pytest tests/infra --hosts='ansible://all' --ansible-inventory=inventories/prod/hosts.yml
    pytest tests/infra/test_cdnlab_delivery.py --hosts='ansible://appliances' --ansible-inventory=…

Each suite applies to the hosts of its group (appliances, control, monitoring; change the names with
CDNLAB_GROUP_APPLIANCES, CDNLAB_GROUP_CONTROL, CDNLAB_GROUP_MONITORING) and reads what to expect
from the inventory's variables, falling back to the roles' defaults. With a non-Ansible backend
(``--hosts=ssh://…``) there are no groups: every suite runs against every host given.

Without ``--hosts`` the suites are skipped: ``make test`` runs them from tests/ansible against
hosts it boots (systemd-nspawn) after applying site.yml to them.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _need_hosts(request: pytest.FixtureRequest) -> None:
    if not getattr(request.config.option, "hosts", None):
        pytest.skip(
            "testinfra suite: give --hosts (and --ansible-inventory); tests/ansible runs it on booted hosts"
        )
