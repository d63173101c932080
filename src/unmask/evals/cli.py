"""`unmask eval`: evaluate a model.

Its options and work are built in issue #6; until then it says so and exits 2.
"""

import argparse


def register(subparsers, name: str, help_text: str) -> argparse.ArgumentParser:
    from ..cli import not_built

    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    not_built(parser, issue=6)
    return parser
