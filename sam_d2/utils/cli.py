"""What every command-line tool of sam_d2 shares: its ``--help`` layout."""

import argparse

__all__ = ["HelpFormatter"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` that shows each option's default and keeps the description's line breaks.

    Required options, flags (which take no value: their default is just "flag not given") and
    defaults that mean "not set" (None, False, "") show no default.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        default = action.default
        flag = action.nargs == 0
        if flag or action.required or default is None or default is False or default == "":
            return action.help or ""
        return super()._get_help_string(action)
