"""The documented maxima of everything a user types or a disk holds (docs/reliability.md#limits).

Inputs past these are refused with one line naming the field, the limit and the fix, before any work
starts, so no input can make coldpipe hang, run out of memory or print an unbounded message. The numbers
are far beyond any edge-cluster cold start (the largest catalog model has 80 layers and a 152k vocabulary;
a home or factory cell has tens of devices) and small enough that the planners and the simulator finish.

:func:`cut` shortens text that quotes user input, saying how much was cut.
"""

from __future__ import annotations

__all__ = [
    "MAX_BLOCKS",
    "MAX_CONFIG_INT",
    "MAX_DEVICES",
    "MAX_ERROR_CHARS",
    "MAX_FILE_BYTES",
    "MAX_LAYERS",
    "MAX_NESTING",
    "MAX_NEW_TOKENS",
    "MAX_NODES",
    "MAX_PROMPT_TOKENS",
    "MAX_REQUESTS",
    "MAX_SECONDS",
    "MAX_TOKEN_WORK",
    "MAX_YAML_BYTES",
    "cut",
]

MAX_FILE_BYTES = 64 * 2**20  # a JSON file: plan, config.json, index, profile, trace, scenario: 64 MiB
MAX_YAML_BYTES = 2**20  # a YAML file (YAML parses ~1 MB/s; 256 devices or 4096 blocks take < 0.5 MiB)
MAX_NESTING = 64  # lists and mappings inside each other in a YAML/JSON document
MAX_NODES = 1_000_000  # values in a YAML/JSON document, YAML aliases expanded
MAX_LAYERS = 1024  # decoder layers of a model (so at most 1026 blocks from a config)
MAX_BLOCKS = 4096  # blocks of an explicit `model: {blocks: [...]}`
MAX_DEVICES = 256  # devices of a scenario
MAX_PROMPT_TOKENS = 1 << 20  # tokens of one prompt
MAX_NEW_TOKENS = 1 << 16  # generated tokens per request
MAX_REQUESTS = 256  # requests of one burst
MAX_TOKEN_WORK = 1 << 16  # requests x new tokens: the decode steps the simulator replays
MAX_CONFIG_INT = 1 << 24  # any size in config.json (hidden, intermediate, vocab, heads, head_dim)
MAX_SECONDS = 1e12  # any load, computation or transfer time a scenario implies (~31,700 years)
MAX_ERROR_CHARS = 400  # of quoted input inside one error line


def cut(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters of it, saying how many were cut.

    >>> cut("abc")
    'abc'
    >>> cut("x" * 50, 10)
    'xxxxxxxxxx... (40 more characters cut)'
    >>> cut("two\\nlines")
    'two lines'
    """
    flat = " ".join(text.split("\n")) if "\n" in text else text
    flat = flat.replace("\r", " ")
    if len(flat) <= limit:
        return flat
    return f"{flat[:limit]}... ({len(flat) - limit} more characters cut)"
