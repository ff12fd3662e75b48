"""``python -m cdnlab.edge.worker_entry CONFIG.json INDEX``: how the master starts a worker."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from cdnlab.edge.config import EdgeConfig
from cdnlab.edge.worker import worker_main


def _die_with_parent() -> None:
    """A worker must not outlive its master (kill -9 of the master included): PR_SET_PDEATHSIG."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass  # not Linux: the master's supervision still stops workers on a clean exit


def main() -> None:
    _die_with_parent()
    config = EdgeConfig.model_validate_json(Path(sys.argv[1]).read_text())
    logging.basicConfig(
        level=config.log.level.upper(),
        format=f"%(asctime)s worker[{sys.argv[2]}] %(levelname)s %(name)s: %(message)s",
    )
    worker_main(config, int(sys.argv[2]))


if __name__ == "__main__":
    main()
