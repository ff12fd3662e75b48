"""``cdnlab fill …``: the control plane's subcommands (predict, plan, publish) and the
appliance's ``run``. Lives outside both so that neither ``control`` nor ``edge`` imports the other."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    from cdnlab.control import fill_cli
    from cdnlab.edge import fillrun

    sub = fill_cli.register(parser)
    fillrun.register(sub)
