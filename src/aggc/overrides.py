"""Overrides written for a later command line (the grid's commands, cells files).

Hydra's override grammar stops an unquoted value at a second `=`, a space, a comma, a
bracket, ... (`hydra.run.dir=runs/aggc__clip.beta=0.1/seed0` fails with "mismatched input
'=' expecting <EOF>"), and OmegaConf reads `${...}` as an interpolation. So a string value
that comes from outside the config (a path) is written quoted: `key='<value>'`.
"""

from __future__ import annotations

import re
import shlex


def quoted(value) -> str:
    """`value` as a Hydra override value that composes back to exactly `str(value)`: in
    single quotes, a quote escaped (`\\'`), backslashes doubled where they precede a quote
    (or the closing one), `${` escaped for OmegaConf (`\\${`, its backslashes doubled)."""
    text = re.sub(r"(\\*)\$\{", lambda m: m[1] * 2 + "\\${", str(value))
    text = re.sub(r"(\\*)'", lambda m: m[1] * 2 + "\\'", text)
    text = re.sub(r"(\\+)$", lambda m: m[1] * 2, text)
    return f"'{text}'"


def cells_line(overrides: list[str]) -> str:
    """One line of a cells file (`slurm/array.sbatch`): the overrides as shell words, which
    the template splits back with `xargs` (quotes and all, nothing expanded). A word with a
    Hydra-quoted value goes in double quotes where it can (`"runs_root='a b'"`), else `shlex`'s."""
    def word(text: str) -> str:
        if "'" in text and not re.search(r'["\\$`!\n]', text):
            return f'"{text}"'
        return shlex.quote(text)

    return " ".join(map(word, overrides)) + "\n"
