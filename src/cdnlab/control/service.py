"""Run the control plane: the FastAPI app under uvicorn, with the monitor in the same loop."""

from __future__ import annotations

from cdnlab.control.config import ControlConfig


def serve(cfg: ControlConfig, log_level: str = "info", access_log: bool = False) -> None:
    import uvicorn

    from cdnlab.control.app import create_app
    from cdnlab.control.state import ControlState

    state = ControlState(cfg)
    host, _, port = cfg.listen.rpartition(":")
    app = create_app(state)
    config = uvicorn.Config(
        app,
        host=host.strip("[]"),
        port=int(port),
        log_level=log_level,
        access_log=access_log,
        loop="uvloop",
        http="httptools",
        lifespan="on",
    )
    try:
        uvicorn.Server(config).run()
    finally:
        state.close()
