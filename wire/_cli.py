"""The command-line conventions the relay, the load generator and the simulated upstream share."""

from __future__ import annotations

import argparse
import difflib
from typing import NoReturn

__all__ = ["ArgumentParser"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, ``PROG: MESSAGE; PROG --help lists every option``, exit status 2
    (argparse's own print the whole usage first, dozens of lines for the relay); an unknown option also names the
    closest known one."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            options = [s for action in self._actions for s in action.option_strings]
            for word in message.removeprefix("unrecognized arguments: ").split():
                close = difflib.get_close_matches(word.split("=", 1)[0], options, n=1) if word.startswith("-") else []
                if close:
                    message += f" (did you mean {close[0]}?)"
                    break
        self.exit(2, f"{self.prog}: {message}; {self.prog} --help lists every option\n")
