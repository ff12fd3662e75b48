"""``python -m cdnlab.edge.worker_entry CONFIG.json INDEX``: how the master starts a worker."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from cdnlab.edge.config import EdgeConfig
from cdnlab.edge.worker import worker_main


def main() -> None:
    config = EdgeConfig.model_validate_json(Path(sys.argv[1]).read_text())
    logging.basicConfig(
        level=config.log.level.upper(),
        format=f"%(asctime)s worker[{sys.argv[2]}] %(levelname)s %(name)s: %(message)s",
    )
    worker_main(config, int(sys.argv[2]))


if __name__ == "__main__":
    main()
