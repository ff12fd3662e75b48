"""cdnlab's CrossGuard policy pack: ``rules.py`` (the rules), ``__main__.py`` (the pack for
``pulumi preview --policy-pack infra/policy_pack``), ``on_graph.py`` (the rules on a captured graph).
"""
